"""Contributor reward weights (docs/architecture.md#contributor-attribution), exact to the last part per million.

weight(c) = mix.volume · volume(c) + mix.quality · quality(c) + mix.impact · impact(c), each a share
of its component over all contributors, where (docs/attestations.md, "Reward weights"):

- volume(c) = f(c) · (c's traces in the window): every accepted trace counts, whatever its split
  (train rows teach, dev rows validate, held-out rows measure the gain being paid for), after
  duplicates and copies collapsed to their first submitter (``training/datasets.py``) and without
  the traces flagged as likely mislabeled (``training/label_noise.py``);
- quality(c) = f(c) · (the sum of those traces' outcome scores: feedback in [0, 1], booleans 0/1);
- f(c) = :func:`label_factor`: what c's labels are worth, from how often the window's evidence
  contradicts them (negative marking, heavier for a systematic flip, times the agreement rate);
- impact(c) = :func:`pooled_credit`: the demos' leave-one-out gain on the holdout
  (:mod:`teleprompt_assets.reward.impact`), a helpful demo's shared by the traces like it; a
  harmful demo earns nothing (excluded, not subtracted: see there why).

A component with nothing to share (no demos, no outcomes, no demo that helps) drops out and the
rest renormalize. No address may exceed ``mix.cap`` of the total: the excess is redistributed to the
others in proportion to their weight (the cap limits an address, not a party: see the guarantees in
docs/attestations.md). Defaults: volume 2/5, quality 1/5, impact 2/5, cap 1/2. Weights are exact
fractions, turned into integers summing to exactly 1,000,000 by largest remainder with ties broken
by address, so anyone can recompute them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction

from teleprompt_assets.core.config import RewardMix

PPM = 1_000_000


@dataclass(frozen=True)
class ContributorRow:
    contributor: str
    traces: int
    outcome_sum: Fraction
    demos: int
    impact: Fraction
    weight_ppm: int
    label_factor: Fraction = Fraction(1)
    volume_share: Fraction = Fraction(0)  # each component's share, before the mix and the cap
    quality_share: Fraction = Fraction(0)
    impact_share: Fraction = Fraction(0)


def apply_cap(weights: Mapping[str, Fraction], cap: Fraction) -> dict[str, Fraction]:
    """Clamp every share at ``cap`` and hand the excess to the others pro rata, until stable.

    With fewer than 1/cap contributors of positive weight the cap cannot hold; it is relaxed to an
    equal split among them. Zero weights stay zero.
    """
    total = sum(weights.values(), Fraction(0))
    if total == 0:
        return dict(weights)
    cap = max(cap, Fraction(1, sum(1 for w in weights.values() if w > 0)))
    shares = {k: w / total for k, w in weights.items()}
    capped: set[str] = set()
    while True:
        over = {k for k, v in shares.items() if v > cap and k not in capped}
        if not over:
            return shares
        capped |= over
        free = {k: v for k, v in shares.items() if k not in capped}
        left = 1 - cap * len(capped)
        free_total = sum(free.values(), Fraction(0))
        shares = {k: cap for k in capped} | {k: (v * left / free_total if free_total else Fraction(0)) for k, v in free.items()}


def largest_remainder(weights: Mapping[str, Fraction], total: int = PPM) -> dict[str, int]:
    """Integers proportional to ``weights`` summing to exactly ``total``; ties go to the lower address."""
    positive = {k: w for k, w in weights.items() if w > 0}
    if not positive:
        return {}
    norm = sum(positive.values())
    exact = {k: w * total / norm for k, w in positive.items()}
    floors = {k: int(v) for k, v in exact.items()}
    left = total - sum(floors.values())
    for key in sorted(exact, key=lambda k: (-(exact[k] - floors[k]), k.lower()))[:left]:
        floors[key] += 1
    return floors


def outcome_score(feedback_json: str) -> Fraction | None:
    """Mean of a trace's outcome values in [0, 1]; None when it has none."""
    values = [Fraction(v) for v in json.loads(feedback_json).values() if isinstance(v, (bool, int, float))]
    return sum(values, Fraction(0)) / len(values) if values else None


def _shares(counts: Mapping[str, Fraction]) -> dict[str, Fraction]:
    total = sum(counts.values(), Fraction(0))
    return {k: v / total for k, v in counts.items()} if total > 0 else {}


def label_agreement(rows: Iterable[tuple[str, str | None, str | None]]) -> dict[str, Fraction]:
    """Per contributor, the share of its labels the window's evidence does not contradict.

    ``rows``: (contributor, label, label_issue) for every row of the window (all splits: the more
    labels, the better the estimate). A contributor with no labels has nothing to contradict: 1.
    """
    labeled: Counter[str] = Counter()
    flagged: Counter[str] = Counter()
    for contributor, label, issue in rows:
        if label not in (None, ""):
            labeled[contributor] += 1
            flagged[contributor] += issue is not None
    return {c: Fraction(labeled[c] - flagged[c], labeled[c]) for c in labeled}


SYSTEMATIC_MIN_FLAGS = 5  # fewer flags say nothing about a pattern


def label_factor(rows: Iterable[tuple[str, str | None, str | None, str | None]]) -> dict[str, Fraction]:
    """What a contributor's labels are worth per trace, in [0, 1]: ``agreement × net / kept``.

    ``rows``: (contributor, label, label_issue, label_suggested) for every row of the window.

    - A flagged label is not only worthless, it cancels good ones: ``net = kept − λ · flagged``,
      floored at 0. With λ ≥ 1 (negative marking) a contributor labeling at random among k ≥ 2
      equally likely classes earns nothing from its labels.
    - λ = 1 + the share of the contributor's flags on its most frequent (label → suggested) pair,
      once it has ``SYSTEMATIC_MIN_FLAGS`` flags: random slips spread over many pairs (λ near 1); a
      systematic flip of one class into another (what an adversary does, and what teaches the
      program a consistent wrong rule) puts them all on one pair (λ = 2).
    - What is left is discounted by the agreement rate (``kept / labeled``), since the detector
      misses some wrong labels. A contributor whose rows carry no labels keeps 1.
    """
    rows = list(rows)
    agreement = label_agreement((c, label, issue) for c, label, issue, _ in rows)
    kept: Counter[str] = Counter()
    flags: dict[str, Counter[tuple[str | None, str | None]]] = {}
    for contributor, label, issue, suggested in rows:
        if issue is None:
            kept[contributor] += 1
        else:
            flags.setdefault(contributor, Counter())[(label, suggested)] += 1
    factor = {}
    for c in set(kept) | set(flags):
        pairs = flags.get(c, Counter())
        flagged = sum(pairs.values())
        weight = 1 + (Fraction(max(pairs.values()), flagged) if flagged >= SYSTEMATIC_MIN_FLAGS else 0)
        net = max(Fraction(0), kept[c] - weight * flagged)
        factor[c] = agreement.get(c, Fraction(1)) * net / kept[c] if kept[c] else Fraction(0)
    return factor


def pooled_credit(demos: Iterable[tuple[str | None, str | None, Fraction]], pool: Iterable[tuple[str, str | None]],
                  factor: Mapping[str, Fraction] | None = None) -> dict[str, Fraction]:
    """Each contributor's impact credit from the demos' leave-one-out units.

    ``demos``: (contributor, label, units) per demo; ``pool``: (contributor, label) per trace that
    counts for the rewards. A demo that helped stands for the equivalent data it was drawn from:
    which of several like traces the optimizer picked is its choice, not the contributors' merit, so
    its units are shared by the traces with the demo's label (all of them, for free-text outputs),
    in proportion to each contributor's count times its label factor.

    A demo that hurt (zero or negative units) earns nothing: harm is *excluded*, not subtracted.
    Subtracting would have to stop at zero per address, and a party could then park its harmful
    demos on a throwaway address and keep the rest of its credit whole; excluding keeps every
    component a plain sum over traces, so splitting data over addresses cannot raise its total.
    """
    weights = factor or {}
    by_label: dict[str | None, Counter[str]] = {}
    for contributor, label in pool:
        by_label.setdefault(label, Counter())[contributor] += 1
    everyone: Counter[str] = Counter()
    for counts in by_label.values():
        everyone.update(counts)
    credit: dict[str, Fraction] = {}
    for _, label, units in demos:
        units = Fraction(units)
        if units <= 0:
            continue
        counts = by_label.get(label) or everyone
        mass = {c: n * weights.get(c, Fraction(1)) for c, n in counts.items()}
        total = sum(mass.values(), Fraction(0))
        for c, m in mass.items():
            if total > 0 and m > 0:
                credit[c] = credit.get(c, Fraction(0)) + units * m / total
    return credit


def reward_weights(
    traces: Iterable[tuple[str, str]],
    demo_contributors: Iterable[str],
    impact: Mapping[str, Fraction] | None = None,
    mix: RewardMix | None = None,
    factor: Mapping[str, Fraction] | None = None,
) -> list[ContributorRow]:
    """``traces``: (contributor, feedback_json) of each trace that fed the optimization (likely
    mislabeled traces excluded); ``impact``: each contributor's credit (:func:`pooled_credit`);
    ``factor``: what each contributor's labels are worth (:func:`label_factor`, default 1)."""
    mix = mix or RewardMix()
    volume: Counter[str] = Counter()
    quality: dict[str, Fraction] = {}
    for contributor, feedback in traces:
        volume[contributor] += 1
        quality[contributor] = quality.get(contributor, Fraction(0)) + (outcome_score(feedback) or Fraction(0))
    demos = Counter(demo_contributors)
    credit = {k: Fraction(v) for k, v in (impact or {}).items() if v > 0}
    trust = {c: (factor or {}).get(c, Fraction(1)) for c in volume}
    components = [
        (mix.volume, _shares({k: v * trust[k] for k, v in volume.items()})),
        (mix.quality, _shares({k: v * trust[k] for k, v in quality.items()})),
        (mix.impact, _shares(credit)),
    ]
    active = [(m, s) for m, s in components if s and m > 0]
    mass = sum((m for m, _ in active), Fraction(0))
    combined: dict[str, Fraction] = {}
    for m, shares in active:
        for k, share in shares.items():
            combined[k] = combined.get(k, Fraction(0)) + m / mass * share
    ppm = largest_remainder(apply_cap(combined, mix.cap)) if combined else {}
    everyone = sorted(set(volume) | set(demos), key=str.lower)
    volume_s, quality_s, impact_s = (shares for _, shares in components)
    return [ContributorRow(c, volume[c], quality.get(c, Fraction(0)), demos[c], credit.get(c, Fraction(0)), ppm.get(c, 0), trust.get(c, Fraction(1)),
                           volume_s.get(c, Fraction(0)), quality_s.get(c, Fraction(0)), impact_s.get(c, Fraction(0))) for c in everyone]


def contributor_summary(data_traces: Iterable[Mapping[str, str]], demos: Iterable[Mapping[str, str | None]]) -> list[dict]:
    """Per contributor: the traces it supplied to the training window and those that became demos.

    Travels with every model version, attested or not, so credit is traceable even without DeltaOne.
    """
    supplied: dict[str, list[str]] = {}
    for trace in data_traces:
        supplied.setdefault(trace["contributor"], []).append(trace["trace_id"])
    demo_ids: dict[str, list[str]] = {}
    for demo in demos:
        if demo.get("contributor") and demo.get("trace_id"):
            demo_ids.setdefault(str(demo["contributor"]), []).append(str(demo["trace_id"]))
    return [
        {"contributor": c, "traces": sorted(supplied.get(c, [])), "demo_traces": sorted(demo_ids.get(c, []))}
        for c in sorted(set(supplied) | set(demo_ids), key=str.lower)
    ]


def demo_credit(credits: Iterable[tuple[object, object, Fraction]], demos: Iterable[Mapping[str, object]]) -> dict[str, Fraction]:
    """Leave-one-out credit per contributor: each demo's measured units go to the contributor of the
    trace it came from (``credits`` and ``demos`` in the same order, one per demo)."""
    credit: dict[str, Fraction] = {}
    for (_, _, units), demo in zip(credits, demos, strict=True):
        contributor = demo.get("contributor")
        if contributor:
            credit[str(contributor)] = credit.get(str(contributor), Fraction(0)) + units
    return credit
