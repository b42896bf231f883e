"""From a program × day's stage outputs to what its attestation commits to, or why there is none.

An attestation is issued only on enough evidence (``split.min_holdout`` held-out examples), with
DeltaOne and a bootstrap lower bound above zero (docs/architecture.md#deltaone); its time is the end of the partition's
day, so a re-run signs the identical attestation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from teleprompt_assets.attest.bundles import ZERO_UID, Evidence
from teleprompt_assets.evaluate.deltaone import Comparison


def comparison_of(evaluation: Mapping[str, Any]) -> Comparison:
    return Comparison(**{k: v for k, v in evaluation["comparison"].items() if k not in ("baseline_mean", "candidate_mean")})


def refusal(comparison: Comparison, min_holdout: int) -> str | None:
    """Why this comparison is not attested; None when it is attestable."""
    if comparison.n < min_holdout:
        return f"evidence too small: {comparison.n} held-out examples, fewer than min_holdout={min_holdout}"
    if not comparison.deltaone:
        return "DeltaOne not reached"
    if not comparison.significant:
        return f"confidence bound not above zero (ci_low_ppm={comparison.ci_low_ppm})"
    return None


def attestation_time(day: str) -> int:
    """The end of the partition's day (UTC), in seconds."""
    return int(datetime.combine(date.fromisoformat(day) + timedelta(days=1), time(0), tzinfo=UTC).timestamp())


def evidence_of(program: str, day: str, model_version: int, compiled: Mapping[str, Any], evaluation: Mapping[str, Any],
                rewards: Iterable[Mapping[str, Any]], ref_uid: str | None) -> Evidence:
    comparison = comparison_of(evaluation)
    return Evidence(
        program=program, model_version=model_version, baseline_version=evaluation["baseline_version"], program_state=compiled["state"],
        eval_leaves=[(s["example_hash"], s["baseline_q"], s["candidate_q"]) for s in evaluation["scores"]],
        data_leaves=[d["trace_hash"] for d in compiled["data_traces"]],
        reward_leaves=[(r["contributor"], r["weight_ppm"]) for r in rewards if r["weight_ppm"] > 0],
        seed=comparison.seed, resamples=comparison.resamples, confidence_pct=comparison.confidence_pct,
        time=attestation_time(day), ref_uid=ref_uid or ZERO_UID,
    )
