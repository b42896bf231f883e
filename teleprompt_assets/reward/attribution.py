"""Contributor reward weights (DESIGN §8), exact to the last part per million.

weight(c) = mix.volume · volume(c) + mix.quality · quality(c) + mix.impact · impact(c), where
- volume(c): c's share of the deduplicated traces that fed the optimization (duplicates were
  removed upstream, so flooding adds nothing);
- quality(c): c's share of those traces weighted by their mean outcome score (feedback in [0, 1],
  booleans as 0/1);
- impact(c): c's share of the measured gain of the demos its traces became, by leave-one-out on
  the holdout (:mod:`teleprompt_assets.reward.impact`): a demo's credit is how much the candidate's
  quantized holdout score drops when that demo alone is removed (never negative).
A component with nothing to share (no demos, no outcomes, no demo that helps) drops out and the
rest renormalize. No contributor may exceed ``mix.cap`` of the total: the excess is redistributed
to the others in proportion to their weight. Defaults: volume 2/5, quality 1/5, impact 2/5, cap
1/2. Weights are exact fractions, turned into integers summing to exactly 1,000,000 by largest
remainder with ties broken by address, so anyone can recompute them.
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


def reward_weights(
    traces: Iterable[tuple[str, str]],
    demo_contributors: Iterable[str],
    impact: Mapping[str, Fraction] | None = None,
    mix: RewardMix | None = None,
) -> list[ContributorRow]:
    """``traces``: (contributor, feedback_json) of each trace that fed the optimization;
    ``impact``: each contributor's leave-one-out credit (see module doc)."""
    mix = mix or RewardMix()
    volume: Counter[str] = Counter()
    quality: dict[str, Fraction] = {}
    for contributor, feedback in traces:
        volume[contributor] += 1
        quality[contributor] = quality.get(contributor, Fraction(0)) + (outcome_score(feedback) or Fraction(0))
    demos = Counter(demo_contributors)
    credit = {k: Fraction(v) for k, v in (impact or {}).items() if v > 0}
    components = [
        (mix.volume, _shares({k: Fraction(v) for k, v in volume.items()})),
        (mix.quality, _shares(quality)),
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
    return [ContributorRow(c, volume[c], quality.get(c, Fraction(0)), demos[c], credit.get(c, Fraction(0)), ppm.get(c, 0)) for c in everyone]


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
