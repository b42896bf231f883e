"""The contributor game: what each way of gaming the rewards earns against honest contribution (not a test).

    .venv/bin/python benchmarks/reward_game.py                 # 7-day window, 60 tickets of true data per party
    .venv/bin/python benchmarks/reward_game.py --per-party 30  # the size the test suite plays

Every party brings the same amount of *true data* (``--per-party`` distinct tickets, routed by the
sample program's templates, each with a reference number so no two are alike), spread over a 7-day
window, and then plays one strategy:

- ``honest_1..4``: labels every ticket with its true queue;
- ``noisy``: 35% of its labels are another queue, at random;
- ``flooder``: its tickets, plus as many again as exact and near duplicates (case, punctuation);
- ``copycat``: no data of its own; re-submits the honest parties' tickets (exact or near), a day later,
  with their labels;
- ``sybil``: an honest body of data split over 5 addresses (its reward is their sum);
- ``flipper``: labels every ``billing`` ticket ``sales`` (a class-targeted flip), the rest truly.

The window then goes through the product's own code, in process, with the offline LM: curation per
day (``curate/quality.py``), the training table and its label check (``training/``), a
``BootstrapFewShot`` compile of ticket_router, the leave-one-out demo impact on the holdout and the
reward weights (``reward/``). A strategy's figure is its total reward over the mean honest party's.
Last line:

    game: honest spread <H>%, noisy <a>x, flooder <b>x, copycat <c>x, sybil <d>x, flipper <e>x

Targets: H <= 10; noisy <= 0.7; flooder <= 1.0; copycat <= 0.05; sybil <= 1.05; flipper <= 0.5.
Deterministic: the same seed gives the same figures.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
END = date(2026, 6, 30)
DAYS = 7
PARTIES = ("honest_1", "honest_2", "honest_3", "honest_4", "noisy", "flooder", "copycat", "sybil", "flipper")
SYBILS = 5
# Outcomes measure the app's answer to a ticket, not who labeled it: the same for every party's
# tickets of a queue, so the figures isolate what the strategies change.
OUTCOMES = {"billing": (True, 0.8), "technical": (False, 0.5), "account": (True, 0.9), "shipping": (True, 0.7), "sales": (False, 0.6)}


@dataclass
class Game:
    weights: dict[str, int]  # address -> ppm
    parties: dict[str, list[str]]  # party -> its addresses
    rows: dict[str, int]  # party -> rows accepted into the window
    flagged: dict[str, int]  # party -> rows flagged likely mislabeled
    demos: dict[str, int] = field(default_factory=dict)
    wrong: dict[str, int] = field(default_factory=dict)  # party -> labels it submitted wrong (the game knows)
    seconds: float = 0.0

    def reward(self, party: str) -> int:
        return sum(self.weights.get(a, 0) for a in self.parties[party])

    def ratios(self) -> dict[str, Fraction]:
        honest = [self.reward(p) for p in PARTIES if p.startswith("honest")]
        mean = Fraction(sum(honest), len(honest))
        return {p: Fraction(self.reward(p)) / mean for p in PARTIES}

    def honest_spread(self) -> Fraction:
        honest = [self.reward(p) for p in PARTIES if p.startswith("honest")]
        return Fraction(max(honest) - min(honest), 1) / Fraction(sum(honest), len(honest))

    def line(self) -> str:
        r = self.ratios()
        return (f"game: honest spread {float(self.honest_spread()) * 100:.1f}%, noisy {float(r['noisy']):.2f}x, flooder {float(r['flooder']):.2f}x, "
                f"copycat {float(r['copycat']):.2f}x, sybil {float(r['sybil']):.2f}x, flipper {float(r['flipper']):.2f}x")


def addresses(party: str) -> list[str]:
    from teleprompt_assets.samples.ticket_traffic import contributor_address

    return [contributor_address(f"game-{party}-{i}") for i in range(SYBILS)] if party == "sybil" else [contributor_address(f"game-{party}")]


def _near(message: str, rng: random.Random) -> str:
    """A near duplicate: the same words, other case and punctuation (what curation's near key ignores)."""
    variants = (message.upper(), message.lower(), message.replace(".", "!").replace("?", "??"), "  " + message + " ...")
    return rng.choice(variants)


def traffic(per_party: int, seed: int) -> list[dict]:
    """The window's raw trace rows (the ingest schema), every party's, in time order."""
    from teleprompt_assets.ingest.traces import day_bounds_ms
    from teleprompt_assets.samples.ticket_router import QUEUES
    from teleprompt_assets.samples.ticket_traffic import SLOTS, TEMPLATES

    rng = random.Random(seed)
    days = [END - timedelta(days=DAYS - 1 - i) for i in range(DAYS)]
    submissions: list[tuple[date, str, str, str, str]] = []  # day, address, message, label, true queue
    honest_pool: list[tuple[date, str, str]] = []
    for party in PARTIES:
        if party == "copycat":
            continue
        own = addresses(party)
        noisy = set(rng.sample(range(per_party), round(0.35 * per_party))) if party == "noisy" else set()  # exactly 35% wrong
        for i in range(per_party):
            queue = QUEUES[i % len(QUEUES)]
            template = rng.choice(TEMPLATES[queue])
            message = template.format(**{k: rng.choice(v) for k, v in SLOTS.items()}) + f" (ref {rng.randrange(10**8):08d})"
            day = days[i % DAYS]
            label = queue
            if i in noisy:
                label = rng.choice([q for q in QUEUES if q != queue])
            if party == "flipper" and queue == "billing":
                label = "sales"
            address = own[i % len(own)]
            submissions.append((day, address, message, label, queue))
            if party.startswith("honest"):
                honest_pool.append((day, message, label))
            if party == "flooder":
                submissions.append((day, address, message, label, queue))
                submissions.append((day, address, _near(message, rng), label, queue))
    copycat = addresses("copycat")[0]
    earlier = [s for s in honest_pool if s[0] < days[-1]]  # a copy comes after its original
    for day, message, label in rng.sample(earlier, min(per_party, len(earlier))):
        later = day + timedelta(days=1)
        submissions.append((later, copycat, message if rng.random() < 0.5 else _near(message, rng), label, label))
    rows = []
    for n, (day, address, message, label, queue) in enumerate(sorted(submissions, key=lambda s: (s[0], rng.random()))):
        start, _ = day_bounds_ms(day.isoformat())
        resolved, csat = OUTCOMES[queue]
        rows.append({
            "trace_id": f"tr-{n:06d}", "timestamp_ms": start + 1000 + n, "state": "OK", "experiment_id": "1", "program": "ticket_router",
            "contributor": address, "inputs": json.dumps({"message": message}), "outputs": json.dumps({"queue": label}),
            "feedback": json.dumps({"resolved_first_touch": resolved, "csat": csat}),
            "expectations": json.dumps({"queue": label}), "source": "game", "payload_from": "preview", "_wrong": label != queue,
        })
    return rows


def play(per_party: int = 60, seed: int = 0) -> Game:
    import dspy
    import polars as pl

    from teleprompt_assets.core.config import ProjectConfig
    from teleprompt_assets.core.lm import offline_lm
    from teleprompt_assets.core.spec import load_project
    from teleprompt_assets.curate.quality import curate_day
    from teleprompt_assets.ingest.traces import RAW_SCHEMA, day_bounds_ms
    from teleprompt_assets.optimize import selection
    from teleprompt_assets.reward import weigh
    from teleprompt_assets.training import datasets, metrics

    began = time.perf_counter()
    project, specs = load_project(REPO / "teleprompt.yaml")
    spec = specs["ticket_router"]
    config: ProjectConfig = project
    submitted = traffic(per_party, seed)
    raw = pl.DataFrame([{k: v for k, v in r.items() if k != "_wrong"} for r in submitted], schema=RAW_SCHEMA)
    accepted = []
    for i in range(DAYS):
        day = END - timedelta(days=DAYS - 1 - i)
        lo, hi = day_bounds_ms(day.isoformat())
        accepted.append(curate_day(raw.filter(pl.col("timestamp_ms").is_between(lo, hi - 1)), spec, config.quality, now_ms=hi).accepted)
    window = pl.concat(accepted, how="vertical_relaxed")
    table, _ = datasets.window_table(window, spec)
    metric, _ = metrics.window_metric(spec, table)
    with dspy.context(lm=offline_lm()):
        window = selection.Window(datasets.training_examples(table, spec), datasets.examples(table, spec, "dev"), datasets.training_examples(table, spec, "dev"))
        result = selection.optimize(spec, window, metric).result
        rows = {r["trace_id"]: r for r in table.select("trace_id", "contributor", "label").to_dicts()}
        demos = [{"contributor": rows[d.trace_id]["contributor"], "label": rows[d.trace_id]["label"]} if d.trace_id in rows else {"contributor": None, "label": None}
                 for d in result.demos]
        weights = weigh.weigh(spec, table, result.program, demos, metric, offline_lm(), config.rewards).rows
    parties = {p: addresses(p) for p in PARTIES}
    party_of = {a: p for p, owned in parties.items() for a in owned}
    count = lambda frame: {p: sum(1 for c in frame["contributor"] if party_of.get(c) == p) for p in PARTIES}  # noqa: E731
    flagged = table.filter(pl.col("label_issue").is_not_null())
    demo_parties = {p: sum(1 for d in demos if party_of.get(d["contributor"]) == p) for p in PARTIES}
    wrong = {p: sum(1 for r in submitted if r["_wrong"] and party_of.get(r["contributor"]) == p) for p in PARTIES}
    return Game({r.contributor: r.weight_ppm for r in weights}, parties, count(table), count(flagged), demo_parties, wrong, time.perf_counter() - began)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-party", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    game = play(args.per_party, args.seed)
    for party in PARTIES:
        print(f"{party:10s} reward {game.reward(party):>7} ppm  rows {game.rows[party]:>4}  wrong labels {game.wrong[party]:>3}  flagged {game.flagged[party]:>3}  "
              f"demos {game.demos[party]:>2}  "
              f"({float(game.ratios()[party]):.2f}x)")
    print(f"played in {game.seconds:.1f} s")
    print(game.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
