"""Peer benchmark: our champion against what a plain DSPy user compiles from the same traces (offline LM; not a test).

    .venv/bin/python benchmarks/peer.py --quick          # ticket_router, seed 0, 30% noise: one cell (~35 s)
    .venv/bin/python benchmarks/peer.py                  # ticket_router and triage_reply x seeds 0-2 x noise 0/0.3/0.5 (~17 min, 2 cores)
    .venv/bin/python benchmarks/peer.py --seeds 5 --noise 0.3,0.5 --programs triage_reply --jobs 2
    .venv/bin/python benchmarks/peer.py --optimizer '{"name": "KNNFewShot", "params": {"k": 4}}'   # ours with another optimizer

Issue 24, item 1. One *cell* per (program, seed, noise), each in a process and a scratch folder of
its own (``--root``, default ``.teleprompt/bench/peer``), deterministic for its seed:

1. **Traffic.** Seven days (2026-06-24..30) of the program's calls are logged into a fresh sqlite
   MLflow store through the trace contract (``ingest.tracing.traced_call`` around the uncompiled
   program with the offline LM, then ``label_trace`` with the outcomes and the contributor's ground
   truth; ``MLFLOW_ENABLE_ASYNC_TRACE_LOGGING=false``). 24 calls a day come from five parties
   (``samples.ticket_traffic.Contributor``), 20% each: ``honest_1..3``; ``noisy``, whose labels are
   another queue at random at the cell's noise rate; ``flooder``, 90% of whose calls are small edits
   (case, punctuation, spacing, a greeting or a "Thanks." added) of messages already seen, labeled
   truly. Three ``bulk_1..3`` addresses each upload one batch of 38 true-labeled calls, on days 2, 4
   and 6 of the window, over the per-contributor share cap that day (``quality.max_contributor_share``, 0.5 in the
   repository: the cap is a water-filling share of a day's accepted rows, so three addresses active
   on one day could never each exceed half; one batch a day does). 10% of calls carry no label. In
   all 282 calls (~40 a day, like the demo). Messages, parties and timestamps depend on the seed only;
   the noise rate only decides which of the noisy party's labels are wrong (those at 30% are among
   those at 50%), so the noise levels of one seed see the same traffic.
2. **Test set.** 400 fresh inputs from the same generator (the ticket templates and their slots) with
   their true labels, never logged anywhere; the same for every noise level of a seed.
3. **Plain DSPy**, as a user without this product would do it: ``mlflow.search_traces`` over the window
   (MLflow's own API, chronological), one ``dspy.Example`` per trace that has an expectation, from the
   root span's inputs and the expectation as logged: no dedupe, no cap, no label check. Compiled with
   the demo limits of our config (``max_bootstrapped_demos``/``max_labeled_demos`` from its optimizer
   params, DSPy's defaults where it sets none) by (a) ``dspy.BootstrapFewShot`` and (b)
   ``dspy.MIPROv2(auto="light", seed=<seed>, num_threads=1)`` (it splits its own validation set off
   the examples) and (c) DSPy's own ``dspy.KNNFewShot(k=3)`` with the same local hashing embedder our
   KNN uses (it compiles nothing and bootstraps on the neighbours of every served call: its calls
   column gives the LM calls per served input in parentheses), with the program's metric and the same
   offline LM (``core.lm.build_lm()`` with ``TELEPROMPT_LM`` unset).
4. **Ours**, as a user runs the product: a scratch ``TELEPROMPT_HOME``/``DAGSTER_HOME``, a config file
   (``TELEPROMPT_CONFIG``) that is the repository's ``teleprompt.yaml`` (quality, rewards, lm, window)
   with only the cell's program, whose entry is the repository's ``ticket_router`` entry (its optimizer
   and split included, so whatever the product's default becomes is what is measured; ``--optimizer``
   replaces the optimizer section), and the ``optimize_program`` job for the last day's partition run
   in process as ``benchmarks/end_to_end.py`` does (``launch.run_partition``; earlier days of the window
   are ingested by the run itself). The ``champion`` is loaded with ``register.serving.load_champion``;
   when the run promoted nothing, what serves is the uncompiled program and that is what is scored.
5. Each program is scored on the test set with its metric (exact match), with the same offline LM.

LM calls: plain sides count every call the offline engine answers during their compile; ours is the
whole run, from the run's materialization metadata: ``compiled_program`` ``lm_calls`` + ``evaluation_report``
``lm_calls`` + ``contributor_rewards`` ``impact_lm_calls`` (any other asset reporting ``lm_calls`` is added
and named); the calls the offline engine actually answered during the run are counted too and printed
when they differ. Evaluation on the test set is not counted for any side.

Programs:
- ``ticket_router``: the sample (``samples/ticket_router.py``), exact match on ``queue``.
- ``triage_reply``: a two-step program defined here, ``classify(message) -> queue`` then
  ``draft(message, customer_name, queue) -> reply`` (a ChainOfThought), with ground truth for both
  (the reply is the queue's answer addressed to the customer by name). Its metric is exact match on
  ``queue``, the field every demo of both steps depends on: the offline LM copies a demo's reply with
  the customer's name swapped in, so a reply is right exactly when its step found a demo of the right
  queue, and token F1 on the reply would give a wrong queue's reply most of its tokens (greeting and
  name) and compress every difference; exact match on the free-text reply is a label of up to 60 values,
  on which the product's label check (categorical labels only) cannot run, so a reply metric would
  switch off the very curation the noise levels test. The reply's exact match (both steps right) is
  reported beside it (``reply`` columns), not optimized for. Unlike ``ticket_router``, one message
  asked by two customers is two program inputs, so it is neither deduplicated nor split as one.

Output: a line per cell as it finishes (what each side was given and made of it: examples, quarantine
reasons, window rows, label-check flags, splits, demos per predictor with the message templates the
routing demos cover and how many of them carry a wrong queue), then per program a table (rows seed x noise; accuracy of the uncompiled program, plain
BootstrapFewShot, plain MIPROv2 light and our champion; LM calls of each side, ours as
compile+evaluation+impact), then one line per program and noise level:

    peer: <program> noise=<r> uncompiled=<a> bootstrap=<b> mipro=<m> knn=<k> ours=<o> calls: bootstrap=<n> mipro=<n> knn=<n> ours=<n> (<k> seeds)

with means over the seeds. ``--json FILE`` also writes every cell's figures. These are offline-LM
figures: they compare what each side makes of the same data, not what a hosted LM would score.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dspy

from teleprompt_assets.samples.ticket_router import QUEUES, RouteTicket
from teleprompt_assets.samples.ticket_traffic import SLOTS, TEMPLATES, Contributor, contributor_address

REPO = Path(__file__).resolve().parents[1]
END = date(2026, 6, 30)
DAYS = 7
REGULAR_PER_DAY = 24
BULK_BATCH = 38
BULK_DAYS = {1: "bulk_1", 3: "bulk_2", 5: "bulk_3"}  # day index in the window -> the address uploading that day
LABEL_RATE = 0.9
FLOOD_RATE = 0.9
TEST_SIZE = 400
PROGRAMS = ("ticket_router", "triage_reply")
NOISE = (0.0, 0.3, 0.5)
CELL_PREFIX = "peer-cell: "
NAMES = ("Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra", "Barbara Liskov", "Donald Knuth", "Frances Allen",
         "Ken Thompson", "Margaret Hamilton", "John Backus", "Radia Perlman", "Tim Berners-Lee")
REPLIES = {
    "billing": "Hi {name}, I have passed this to our billing team; any wrong charge is refunded to your card within 5 days.",
    "technical": "Hi {name}, our engineers are looking into it; please try the latest version of the app meanwhile.",
    "account": "Hi {name}, your account settings can be changed under Profile; I have sent you a secure link to do it.",
    "shipping": "Hi {name}, I have checked with the carrier; your parcel's new delivery date is in the tracking email.",
    "sales": "Hi {name}, our sales team will send you a quote for your team size by tomorrow.",
}
# The flooder's small edits of a message already seen: the first five are equal after the product's
# near-duplicate normalization (case, punctuation, spacing), the last two add a word.
EDITS = (str.lower, str.upper, lambda m: m.rstrip(".!?"), lambda m: m + "!", lambda m: m.replace(" ", "  "),
         lambda m: "Hi, " + m, lambda m: m + " Thanks.")


class DraftReply(dspy.Signature):
    """Draft the reply an agent sends to the customer."""

    message: str = dspy.InputField(desc="the customer's message, verbatim")
    customer_name: str = dspy.InputField()
    queue: str = dspy.InputField(desc="the queue the message was routed to")
    reply: str = dspy.OutputField()


class TriageAndReply(dspy.Module):
    """Two steps whose inputs differ: route the message, then draft the reply for that queue."""

    def __init__(self) -> None:
        super().__init__()
        self.classify = dspy.Predict(RouteTicket)
        self.draft = dspy.ChainOfThought(DraftReply)

    def forward(self, message: str, customer_name: str) -> dspy.Prediction:
        queue = self.classify(message=message).queue
        reply = self.draft(message=message, customer_name=customer_name, queue=queue).reply
        return dspy.Prediction(queue=queue, reply=reply)


@dataclass(frozen=True)
class Call:
    """One logged call: who sent it, when, its inputs, its true outputs and the label its contributor logs."""

    start_ns: int
    contributor: Contributor
    inputs: dict[str, str]
    truth: dict[str, str]
    label: dict[str, str] | None
    wrong: bool


def parties(noise: float) -> dict[str, Contributor]:
    regular = {name: Contributor(name, contributor_address(f"peer-{name}"), 0.2) for name in ("honest_1", "honest_2", "honest_3")}
    regular["noisy"] = Contributor("noisy", contributor_address("peer-noisy"), 0.2, label_error_rate=noise)
    regular["flooder"] = Contributor("flooder", contributor_address("peer-flooder"), 0.2, duplicate_rate=FLOOD_RATE)
    bulk = {name: Contributor(name, contributor_address(f"peer-{name}"), 0.0) for name in BULK_DAYS.values()}
    return regular | bulk


def _truth(program: str, queue: str, name: str) -> dict[str, str]:
    return {"queue": queue} if program == "ticket_router" else {"queue": queue, "reply": REPLIES[queue].format(name=name)}


def _inputs(program: str, message: str, name: str) -> dict[str, str]:
    return {"message": message} if program == "ticket_router" else {"message": message, "customer_name": name}


def _fresh(rng: random.Random) -> tuple[str, str, str]:
    queue = rng.choice(QUEUES)
    message = rng.choice(TEMPLATES[queue]).format(**{k: rng.choice(v) for k, v in SLOTS.items()})
    return message, queue, rng.choice(NAMES)


def window() -> list[date]:
    return [END - timedelta(days=DAYS - 1 - i) for i in range(DAYS)]


def traffic(program: str, seed: int, noise: float) -> list[Call]:
    """The week's calls in time order. Every draw is made whatever the noise, so only labels differ between noise levels."""
    rng = random.Random(f"peer-traffic:{program}:{seed}")
    who = parties(noise)
    regular = [who[n] for n in ("honest_1", "honest_2", "honest_3", "noisy", "flooder")]
    seen: list[tuple[str, str, str]] = []
    calls = []
    for index, day in enumerate(window()):
        senders = rng.choices(regular, [c.share for c in regular], k=REGULAR_PER_DAY)
        if index in BULK_DAYS:
            senders += [who[BULK_DAYS[index]]] * BULK_BATCH
        rng.shuffle(senders)
        start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 10**9
        offsets = sorted(rng.randrange(86_000 * 10**9) for _ in senders)
        for offset, contributor in zip(offsets, senders, strict=True):
            flood, edit, fresh = rng.random(), rng.choice(EDITS), _fresh(rng)
            if seen and flood < contributor.duplicate_rate:
                original, queue, name = rng.choice(seen)
                message = edit(original)
            else:
                message, queue, name = fresh
                seen.append(fresh)
            labeled, slip, other = rng.random() < LABEL_RATE, rng.random(), rng.choice([q for q in QUEUES if q != queue])
            wrong = labeled and slip < contributor.label_error_rate
            label = _truth(program, other if wrong else queue, name) if labeled else None
            calls.append(Call(start + offset, contributor, _inputs(program, message, name), _truth(program, queue, name), label, wrong))
    return calls


def test_set(program: str, seed: int) -> list[dspy.Example]:
    rng = random.Random(f"peer-test:{program}:{seed}")
    out = []
    for _ in range(TEST_SIZE):
        message, queue, name = _fresh(rng)
        inputs = _inputs(program, message, name)
        out.append(dspy.Example(**inputs, **_truth(program, queue, name)).with_inputs(*inputs))
    return out


# --- one cell, in its own process --------------------------------------------------------------

_CALLS = [0]
_LOCK = threading.Lock()


def _count_engine_calls() -> None:
    """Count every call any offline engine answers in this process (copies of an LM included)."""
    from teleprompt_assets.core.lm import OfflineEngine

    complete = OfflineEngine.complete

    def counted(self, request):
        with _LOCK:
            _CALLS[0] += 1
        return complete(self, request)

    OfflineEngine.complete = counted


def project_config(program: str, optimizer: dict | None) -> dict:
    """The repository's teleprompt.yaml with only ``program``, registered from the ticket_router entry."""
    import yaml

    project = yaml.safe_load((REPO / "teleprompt.yaml").read_text())
    entry = dict(project["programs"]["ticket_router"])
    if program == "triage_reply":
        entry |= {"module": "benchmarks.peer:TriageAndReply", "metric": {"kind": "exact_match", "field": "queue"}}
    if optimizer is not None:
        entry["optimizer"] = optimizer
    project["programs"] = {program: entry}
    project.setdefault("automation", {}).setdefault("alerts", {})["webhook_url"] = None
    return project


def _seed_store(spec, calls: list[Call], seed: int) -> float:
    import mlflow

    from teleprompt_assets.core.lm import build_lm
    from teleprompt_assets.core.settings import load_settings
    from teleprompt_assets.core.tracking import connect, experiment_id
    from teleprompt_assets.ingest.tracing import label_trace, traced_call

    settings = load_settings()
    client = connect(settings)
    exp_id = experiment_id(client, settings, spec.config.experiment)
    program, rng = spec.build(), random.Random(f"peer-outcome:{spec.name}:{seed}")
    started = time.perf_counter()
    with dspy.context(lm=build_lm()):
        for call in calls:
            trace_id, outputs = traced_call(spec.name, call.contributor.address, call.inputs, program, experiment_id=exp_id,
                                            start_time_ns=call.start_ns, output_fields=spec.output_fields)
            resolved = rng.random() < (0.9 if outputs.get("queue") == call.truth["queue"] else 0.15)
            csat = round(min(1.0, max(0.0, rng.gauss(0.8 if resolved else 0.4, 0.1))), 2)
            label_trace(trace_id, call.contributor.address, {"resolved_first_touch": resolved, "csat": csat}, call.label or {})
    mlflow.flush_trace_async_logging()
    return time.perf_counter() - started


def plain_examples(spec) -> list[dspy.Example]:
    """What a user without the product builds: every trace of the window with its expectation, as MLflow returns them."""
    import mlflow
    from mlflow.entities import Expectation

    from teleprompt_assets.core.settings import load_settings
    from teleprompt_assets.core.tracking import connect

    connect(load_settings())
    exp = mlflow.get_experiment_by_name(spec.config.experiment)
    t0 = int(datetime(window()[0].year, window()[0].month, window()[0].day, tzinfo=UTC).timestamp()) * 1000
    t1 = t0 + DAYS * 86_400_000
    traces = mlflow.search_traces(locations=[exp.experiment_id], filter_string=f"trace.timestamp_ms >= {t0} AND trace.timestamp_ms < {t1}",
                                  order_by=["timestamp_ms ASC"], return_type="list")
    out = []
    for trace in traces:
        labels = {a.name: a.value for a in trace.info.assessments if isinstance(a, Expectation)}
        if not all(f in labels for f in spec.output_fields):
            continue
        inputs = next(s for s in trace.data.spans if s.parent_id is None).inputs  # the root span's: the program's inputs
        out.append(dspy.Example(**{f: inputs[f] for f in spec.input_fields}, **{f: labels[f] for f in spec.output_fields}).with_inputs(*spec.input_fields))
    return out


def score(program: dspy.Module, test: list[dspy.Example], fields: tuple[str, ...]) -> dict[str, float]:
    """Exact match per field over the test set, with a fresh offline LM (its calls are not counted)."""
    from teleprompt_assets.core.lm import build_lm
    from teleprompt_assets.core.spec import exact_match

    metrics = {f: exact_match(f) for f in fields}
    hits: Counter[str] = Counter()
    before = _CALLS[0]
    with dspy.context(lm=build_lm()):
        for example in test:
            prediction = program(**example.inputs())
            for f, metric in metrics.items():
                hits[f] += metric(example, prediction)
    _CALLS[0] = before
    return {f: hits[f] / len(test) for f in fields}


def demo_counts(program: dspy.Module) -> list[int]:
    return [len(p.demos) for p in program.predictors()]


def _shape(message: str) -> str:
    """A message with the flooder's edits undone (case, spacing, greeting, thanks, final punctuation)."""
    text = " ".join(message.lower().split()).removeprefix("hi, ").removesuffix(" thanks.")
    return text.rstrip(".!?")


_TEMPLATES = [(re.compile("^" + ".+?".join(re.escape(part) for part in re.split(r"\{\w+\}", _shape(t))) + "$"), queue)
              for queue, group in TEMPLATES.items() for t in group]


def demo_audit(program: dspy.Module) -> dict[str, int]:
    """Of the first predictor's demos (the one answering ``queue``): the message templates they cover and the demos whose queue is wrong."""
    covered, wrong = set(), 0
    for demo in program.predictors()[0].demos:
        shape = _shape(str(demo.get("message", "")))
        found = next((i for i, (pattern, _) in enumerate(_TEMPLATES) if pattern.match(shape)), None)
        if found is not None:
            covered.add(found)
            wrong += _TEMPLATES[found][1] != demo.get("queue")
    return {"templates": len(covered), "of": len(_TEMPLATES), "wrong": wrong}


def _plain(spec, examples: list[dspy.Example], seed: int, limits: dict[str, int]) -> dict[str, tuple[dspy.Module, int, float]]:
    from teleprompt_assets.core import embedder
    from teleprompt_assets.core.lm import build_lm

    metric = spec.metric()
    out = {}
    for side in ("bootstrap", "mipro", "knn"):
        before, started = _CALLS[0], time.perf_counter()
        with dspy.context(lm=build_lm()):
            if side == "bootstrap":
                compiled = dspy.BootstrapFewShot(metric=metric, **limits).compile(spec.build(), trainset=examples)
            elif side == "mipro":
                compiled = dspy.MIPROv2(metric=metric, auto="light", seed=seed, num_threads=1, **limits).compile(spec.build(), trainset=examples)
            else:  # DSPy's own KNNFewShot, k=3 as in its docs, the same local hashing embedder as ours; it bootstraps on the neighbours of every call
                compiled = dspy.KNNFewShot(k=3, trainset=examples, vectorizer=embedder.build(embedder.describe(embedder.HASHING)), **limits).compile(spec.build())
        out[side] = (compiled, _CALLS[0] - before, time.perf_counter() - started)
    return out


def _plain_side(program: dspy.Module, calls: int, seconds: float, test: list[dspy.Example], fields: tuple[str, ...]) -> dict[str, Any]:
    """A plain side's figures; ``serving_calls_per_input``: LM calls per test input (KNNFewShot bootstraps on every call)."""
    before = _CALLS[0]
    scores = score(program, test, fields)
    return {"scores": scores, "lm_calls": calls, "seconds": round(seconds, 1), "demos": demo_counts(program), "audit": demo_audit(program),
            "serving_calls_per_input": round((_CALLS[0] - before) / max(1, len(test)), 2)}


def _run_metadata(instance, run_id: str) -> dict[str, dict[str, Any]]:
    """Materialization metadata of the run, by asset (the run's own partition; filled days go under ``<asset>@<partition>``)."""
    import dagster as dg

    found: dict[str, dict[str, Any]] = {}
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        mat = record.dagster_event.event_specific_data.materialization
        name = mat.asset_key.path[-1]
        key = name if name not in found else f"{name}@{mat.partition}"
        found[key] = {k: v.value for k, v in mat.metadata.items()}
    return found


def _ours(spec, test: list[dspy.Example], fields: tuple[str, ...]) -> dict[str, Any]:
    import dagster as dg

    from teleprompt_assets.definitions import build_definitions
    from teleprompt_assets.launch import ensure_dagster_home, run_partition
    from teleprompt_assets.register.serving import load_champion

    ensure_dagster_home(Path(os.environ["DAGSTER_HOME"]))
    defs = build_definitions()
    before, started = _CALLS[0], time.perf_counter()
    failure = None
    with dg.DagsterInstance.get() as instance:
        try:
            run_id = run_partition(defs, spec.name, END.isoformat(), instance)["run_id"]
        except RuntimeError as exc:  # e.g. the no_regression check stopped the run: nothing was promoted
            failure = " ".join(str(exc).split())[:300]
            run_id = instance.get_runs(limit=1)[0].run_id
        seconds = time.perf_counter() - started
        meta = _run_metadata(instance, run_id)
    engine_calls = _CALLS[0] - before
    parts = {"compile": meta.get("compiled_program", {}).get("lm_calls", 0), "evaluation": meta.get("evaluation_report", {}).get("lm_calls", 0),
             "impact": meta.get("contributor_rewards", {}).get("impact_lm_calls", 0)}
    for asset, values in meta.items():
        if asset.split("@")[0] not in ("compiled_program", "evaluation_report", "contributor_rewards") and isinstance(values.get("lm_calls"), int):
            parts[asset] = values["lm_calls"]
    reasons: Counter[str] = Counter()
    for asset, values in meta.items():
        if asset.split("@")[0] == "quarantined_traces" and isinstance(values.get("reasons"), dict):
            reasons.update(values["reasons"])
    training = meta.get("training_set", {})
    try:
        served = load_champion(spec.name, client=None)
        program, version = served.program, served.version
    except LookupError:
        program, version = spec.build(), 0
    return {"scores": score(program, test, fields), "version": version, "failure": failure, "seconds": seconds, "lm_parts": parts,
            "lm_calls": sum(parts.values()), "engine_calls": engine_calls, "demos": demo_counts(program),
            "audit": demo_audit(program), "quarantined": dict(sorted(reasons.items())), "window_rows": training.get("rows"), "flagged": training.get("likely_mislabeled"),
            "splits": [training.get(f"{s}_rows") for s in ("train", "dev", "holdout")],
            "holdout": {k: meta.get("evaluation_report", {}).get(k) for k in ("baseline_score", "candidate_score", "holdout")},
            "optimizer": " -> ".join(dict.fromkeys(str(v) for k in ("optimizer", "optimizer_chosen") if (v := meta.get("compiled_program", {}).get(k))))}


def run_cell(program: str, seed: int, noise: float, optimizer: dict | None) -> dict[str, Any]:
    """Seed one store, then both sides on it; the figures as one JSON-able dict."""
    import logging

    import yaml

    logging.disable(logging.WARNING)
    _count_engine_calls()
    from teleprompt_assets.core.spec import load_project

    config = Path(os.environ["TELEPROMPT_CONFIG"])
    config.write_text(yaml.safe_dump(project_config(program, optimizer), sort_keys=False))
    spec = load_project(config)[1][program]
    params = spec.config.optimizer.params
    limits = {"max_bootstrapped_demos": int(params.get("max_bootstrapped_demos", 4)), "max_labeled_demos": int(params.get("max_labeled_demos", 16))}
    fields = ("queue",) if program == "ticket_router" else ("queue", "reply")
    calls, test = traffic(program, seed, noise), test_set(program, seed)
    seed_s = _seed_store(spec, calls, seed)
    examples = plain_examples(spec)
    plain = _plain(spec, examples, seed, limits)
    ours = _ours(spec, test, fields)
    return {
        "program": program, "seed": seed, "noise": noise, "traces": len(calls), "seed_seconds": round(seed_s, 1), "limits": limits,
        "wrong_labels": sum(c.wrong for c in calls), "plain_examples": len(examples),
        "uncompiled": score(spec.build(), test, fields),
        **{side: _plain_side(p, n, s, test, fields) for side, (p, n, s) in plain.items()},
        "ours": ours, "optimizer": spec.config.optimizer.model_dump(), "package": str(Path(sys.modules["teleprompt_assets"].__file__).parent),
    }


# --- the benchmark ---------------------------------------------------------------------------------

def _cell_process(root: Path, program: str, seed: int, noise: float, optimizer: str | None) -> dict[str, Any]:
    home = root / f"{program}-s{seed}-n{int(round(noise * 100)):02d}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEPROMPT_", "MLFLOW_", "DAGSTER_"))}
    env |= {"TELEPROMPT_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "TELEPROMPT_CONFIG": str(home / "teleprompt.yaml"),
            "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING": "false", "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "benchmarks.peer", "--cell", program, str(seed), str(noise)] + (["--optimizer", optimizer] if optimizer else [])
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
    (home / "cell.log").write_text(done.stdout + done.stderr)
    lines = [line for line in done.stdout.splitlines() if line.startswith(CELL_PREFIX)]
    if done.returncode or not lines:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"cell {program} seed {seed} noise {noise} failed (exit {done.returncode}); log in {home / 'cell.log'}:\n{tail}")
    cell = json.loads(lines[-1].removeprefix(CELL_PREFIX))
    cell["wall_seconds"] = round(time.perf_counter() - started, 1)
    return cell


def _acc(x: float) -> str:
    return f"{x:.3f}".removeprefix("0")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def table(program: str, cells: list[dict]) -> list[str]:
    two = program != "ticket_router"
    head = ["seed", "noise", "uncompiled", "plain Bootstrap", "plain MIPROv2 light", "plain KNN", "ours", "calls Bootstrap", "calls MIPROv2", "calls KNN (per served input)",
            "calls ours (compile+eval+impact)"]
    if two:
        head += ["reply: uncompiled", "Bootstrap", "MIPROv2", "KNN", "ours"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in cells:
        o = c["ours"]
        p = o["lm_parts"]
        extra = "+".join(str(v) for v in p.values())
        if o["engine_calls"] != o["lm_calls"]:
            extra += f", engine {o['engine_calls']}"
        row = [str(c["seed"]), f"{c['noise']:.2f}", _acc(c["uncompiled"]["queue"]), _acc(c["bootstrap"]["scores"]["queue"]),
               _acc(c["mipro"]["scores"]["queue"]), _acc(c["knn"]["scores"]["queue"]), _acc(o["scores"]["queue"]) + ("" if o["version"] else " (no champion)"),
               str(c["bootstrap"]["lm_calls"]), str(c["mipro"]["lm_calls"]), f"{c['knn']['lm_calls']} ({c['knn']['serving_calls_per_input']})", f"{o['lm_calls']} ({extra})"]
        if two:
            row += [_acc(c["uncompiled"]["reply"]), _acc(c["bootstrap"]["scores"]["reply"]), _acc(c["mipro"]["scores"]["reply"]), _acc(c["knn"]["scores"]["reply"]),
                    _acc(o["scores"]["reply"])]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def peer_line(program: str, noise: float, cells: list[dict]) -> str:
    acc = {side: _mean([(c[side] if side == "uncompiled" else c[side]["scores"])["queue"] for c in cells]) for side in ("uncompiled", "bootstrap", "mipro", "knn", "ours")}
    calls = {side: _mean([c[side]["lm_calls"] for c in cells]) for side in ("bootstrap", "mipro", "knn", "ours")}
    return (f"peer: {program} noise={noise:.2f} " + " ".join(f"{k}={_acc(v)}" for k, v in acc.items())
            + " calls: " + " ".join(f"{k}={v:.0f}" for k, v in calls.items()) + f" ({len(cells)} seed{'s' if len(cells) != 1 else ''})")


def details(c: dict) -> str:
    o = c["ours"]
    audit = lambda a: f"{a['templates']}/{a['of']} templates, {a['wrong']} wrong"  # noqa: E731
    return (f"  {c['program']} seed {c['seed']} noise {c['noise']:.2f}: {c['traces']} traces ({c['wrong_labels']} wrong labels), seeded in {c['seed_seconds']} s; "
            f"plain: {c['plain_examples']} examples, demos per predictor bootstrap {c['bootstrap']['demos']} ({audit(c['bootstrap']['audit'])}; {c['bootstrap']['seconds']} s), "
            f"mipro {c['mipro']['demos']} ({audit(c['mipro']['audit'])}; {c['mipro']['seconds']} s); ours: {o['optimizer'] or '?'}, quarantined {o['quarantined']}, window rows {o['window_rows']}, "
            f"flagged {o['flagged']}, train/dev/holdout {o['splits']}, holdout {o['holdout']}, champion v{o['version']}, demos {o['demos']} ({audit(o['audit'])}), "
            f"run {o['seconds']:.1f} s" + (f", run failed: {o['failure']}" if o["failure"] else "") + f"; cell {c.get('wall_seconds', 0)} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one cell: ticket_router, seed 0, noise 0.3")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--noise", default=",".join(str(n) for n in NOISE), help="noisy contributor's wrong-label rates (default 0,0.3,0.5)")
    parser.add_argument("--programs", default=",".join(PROGRAMS))
    parser.add_argument("--optimizer", default=None, help="JSON of an optimizer section for ours (default: the repository's ticket_router entry)")
    parser.add_argument("--jobs", type=int, default=1, help="cells run at once, each in its own process")
    parser.add_argument("--root", type=Path, default=REPO / ".teleprompt" / "bench" / "peer")
    parser.add_argument("--json", type=Path, default=None, help="write every cell's figures here")
    parser.add_argument("--cell", nargs=3, metavar=("PROGRAM", "SEED", "NOISE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    optimizer = json.loads(args.optimizer) if args.optimizer else None
    if args.cell:
        program, seed, noise = args.cell
        print(CELL_PREFIX + json.dumps(run_cell(program, int(seed), float(noise), optimizer)), flush=True)
        return 0
    programs = ["ticket_router"] if args.quick else [p.strip() for p in args.programs.split(",") if p.strip()]
    unknown = set(programs) - set(PROGRAMS)
    if unknown:
        parser.error(f"unknown program(s) {', '.join(sorted(unknown))}: choose from {', '.join(PROGRAMS)}")
    seeds = [0] if args.quick else list(range(args.seeds))
    noises = [0.3] if args.quick else [float(n) for n in args.noise.split(",")]
    jobs = [(p, s, n) for p in programs for s in seeds for n in noises]
    started = time.perf_counter()
    print(f"peer: {len(jobs)} cells ({', '.join(programs)}; seeds {seeds}; noise {noises}), {args.jobs} at a time, in {args.root}", flush=True)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(_cell_process, args.root, *job, args.optimizer) for job in jobs]
        cells = []
        for future in futures:
            cells.append(future.result())
            print(details(cells[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(cells, indent=1))
    first = cells[0]
    print(f"\noffline LM; code from {first['package']}; plain sides compiled with {first['limits']}; ours: optimizer {json.dumps(first['optimizer'], sort_keys=True)}")
    for program in programs:
        mine = [c for c in cells if c["program"] == program]
        metric = "exact match on queue" + ("; reply: exact match on the reply, not optimized for" if program != "ticket_router" else "")
        print(f"\n{program} (accuracy on {TEST_SIZE} clean test inputs, {metric})")
        print("\n".join(table(program, mine)))
    print()
    for program in programs:
        for noise in noises:
            print(peer_line(program, noise, [c for c in cells if c["program"] == program and c["noise"] == noise]))
    print(f"peer: {len(cells)} cells in {time.perf_counter() - started:.0f} s wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
