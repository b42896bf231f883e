"""The exact DeltaOne rule: quantized scores, sums, the relative gain and its bootstrap bound.

docs/architecture.md#deltaone fixes the arithmetic: per-example scores are quantized once to integers (ppm, round half
to even), sums decide, and no float takes part in the decision. The bootstrap confidence interval
is integer-valued and seeded, so anyone holding the per-example scores recomputes identical bounds.
Pure Python: the attestation verifier recomputes everything here without MLflow or DSPy.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

SCALE = 1_000_000
DEFAULT_SEED = 20_240_101
DEFAULT_RESAMPLES = 1_000
DEFAULT_CONFIDENCE_PCT = 95


def quantize(score: float | Fraction | int) -> int:
    """q = round-half-even(s × 10^6), computed on the exact value of ``s`` (no float rounding)."""
    exact = Fraction(score)
    if not 0 <= exact <= 1:
        raise ValueError(f"score {score!r} is outside [0, 1]")
    return round(exact * SCALE)


def is_deltaone(baseline_sum: int, candidate_sum: int, n: int) -> bool:
    """B > 0: 100·(C − B) ≥ B. B = 0: C ≥ n·10^4 (one point absolute)."""
    if baseline_sum > 0:
        return 100 * (candidate_sum - baseline_sum) >= baseline_sum
    return n > 0 and candidate_sum >= n * 10_000


def delta_ppm(baseline_sum: int, candidate_sum: int, n: int) -> int:
    """floor((C − B)·10^6 / B); with B = 0, the absolute gain in ppm of the maximum, floor(C / n)."""
    if baseline_sum > 0:
        return (candidate_sum - baseline_sum) * SCALE // baseline_sum
    return candidate_sum // n if n else 0


def bootstrap_ci(
    baseline_q: Sequence[int],
    candidate_q: Sequence[int],
    seed: int = DEFAULT_SEED,
    resamples: int = DEFAULT_RESAMPLES,
    confidence_pct: int = DEFAULT_CONFIDENCE_PCT,
) -> tuple[int, int]:
    """Paired percentile bootstrap of deltaPpm.

    For each of ``resamples`` rounds, draw n indices with ``random.Random(seed).randrange(n)`` (one
    generator for the whole run), compute :func:`delta_ppm` on the resampled sums; sort the results
    and return the values at ranks floor(R·α/2) and R − 1 − floor(R·α/2), α = 1 − confidence.
    """
    n = len(baseline_q)
    if n == 0 or n != len(candidate_q):
        return 0, 0
    rng = random.Random(seed)
    deltas = []
    for _ in range(resamples):
        picks = [rng.randrange(n) for _ in range(n)]
        deltas.append(delta_ppm(sum(baseline_q[i] for i in picks), sum(candidate_q[i] for i in picks), n))
    deltas.sort()
    tail = resamples * (100 - confidence_pct) // 200
    return deltas[tail], deltas[resamples - 1 - tail]


@dataclass(frozen=True)
class ExampleScore:
    example_hash: str
    trace_id: str
    contributor: str
    baseline_q: int
    candidate_q: int
    baseline_output: str
    candidate_output: str


@dataclass(frozen=True)
class Comparison:
    n: int
    baseline_sum: int
    candidate_sum: int
    delta_ppm: int
    deltaone: bool
    ci_low_ppm: int
    ci_high_ppm: int
    seed: int
    resamples: int
    confidence_pct: int
    significant: bool
    wins: int
    losses: int
    ties: int

    @property
    def baseline_mean(self) -> float:
        return self.baseline_sum / (self.n * SCALE) if self.n else 0.0

    @property
    def candidate_mean(self) -> float:
        return self.candidate_sum / (self.n * SCALE) if self.n else 0.0

    @property
    def attestable(self) -> bool:
        """DeltaOne and a confidence bound above zero: what an attestation requires."""
        return self.deltaone and self.significant

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"baseline_mean": self.baseline_mean, "candidate_mean": self.candidate_mean}


def compare(scores: Sequence[ExampleScore], seed: int = DEFAULT_SEED, resamples: int = DEFAULT_RESAMPLES, confidence_pct: int = DEFAULT_CONFIDENCE_PCT) -> Comparison:
    qb = [s.baseline_q for s in scores]
    qc = [s.candidate_q for s in scores]
    b, c, n = sum(qb), sum(qc), len(scores)
    low, high = bootstrap_ci(qb, qc, seed, resamples, confidence_pct)
    return Comparison(
        n=n, baseline_sum=b, candidate_sum=c, delta_ppm=delta_ppm(b, c, n), deltaone=is_deltaone(b, c, n),
        ci_low_ppm=low, ci_high_ppm=high, seed=seed, resamples=resamples, confidence_pct=confidence_pct,
        significant=low > 0, wins=sum(x > y for x, y in zip(qc, qb)), losses=sum(x < y for x, y in zip(qc, qb)),
        ties=sum(x == y for x, y in zip(qc, qb)),
    )
