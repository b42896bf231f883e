"""What a model version carries: its lineage tags, params, metrics, description and the files that
travel with it (docs/architecture.md#model-registry).

Built from the stage outputs of one program × day, so the version's own MLflow run describes that
version alone, whatever else its Dagster run optimized. MLflow conventions: the
optimizer's settings are the run's params, the held-out scores its metrics in [0, 1], and the run
and the version link back to the Dagster run that made them.
"""

from __future__ import annotations

import json
from fractions import Fraction
from typing import Any

from teleprompt_assets.core.settings import Settings
from teleprompt_assets.core.spec import ProgramSpec
from teleprompt_assets.evaluate.deltaone import SCALE
from teleprompt_assets.register.registry import SAMPLE_ARTIFACT

EVALUATION_KEYS = ("baseline_version", "evaluation_method", "comparison", "scores")
ASSET = "registered_version"
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
SCORE_UNITS = ("baseline_score, candidate_score: sums over eval_count held-out examples of each score x 10^6 (quantized, docs/architecture.md#deltaone); "
               "baseline_mean, candidate_mean: the same scores as means in [0, 1]; delta: (C - B) / B, the relative gain (deltaPpm / 10^6)")


def _mean(total: int, n: int) -> float:
    return float(Fraction(total, n * SCALE))


def version_tags(spec: ProgramSpec, partition: str, dataset_hash: str, run_id: str, compiled: dict[str, Any], evaluation: dict[str, Any],
                 settings: Settings | None = None) -> dict[str, Any]:
    """Lineage tags, set on the version and on its run alike. ``baseline_score`` / ``candidate_score`` are
    sums of quantized scores (status, rollback and attestations read them); ``baseline_mean`` /
    ``candidate_mean`` are the means in [0, 1] beside them. With ``settings``, the Dagster run and
    asset that made the version are linked (``dagster_run_url``, ``dagster_asset_url``)."""
    comparison = evaluation["comparison"]
    tags: dict[str, Any] = {
        "base_version": evaluation["baseline_version"], "partition": partition, "dataset_hash": dataset_hash,
        "evaluation_method": evaluation["evaluation_method"]["kind"], "optimizer": spec.config.optimizer.name,
        "optimizer_chosen": (compiled.get("optimizer_chosen") or {}).get("name", spec.config.optimizer.name),
        "optimizer_config": json.dumps(spec.config.optimizer.params, sort_keys=True), "dagster_run_id": run_id,
        "baseline_score": comparison["baseline_sum"], "candidate_score": comparison["candidate_sum"], "eval_count": comparison["n"],
        "delta_ppm": comparison["delta_ppm"], "deltaone": comparison["deltaone"],
        "contributor_count": len({d["contributor"] for d in compiled["data_traces"]}),
    }
    if comparison["n"] > 0:
        tags |= {"baseline_mean": repr(_mean(comparison["baseline_sum"], comparison["n"])),
                 "candidate_mean": repr(_mean(comparison["candidate_sum"], comparison["n"])),
                 "delta": repr(float(Fraction(comparison["delta_ppm"], SCALE))), "score_units": SCORE_UNITS}
    if settings is not None:
        tags |= {"dagster_run_url": settings.dagster_run_url(run_id), "dagster_asset_url": settings.dagster_asset_url(ASSET)}
    return tags


def _param(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True) if isinstance(value, (dict, list, tuple)) else str(value)
    return text[:MAX_PARAM_CHARS]


def version_params(spec: ProgramSpec, partition: str, dataset_hash: str, compiled: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, str]:
    """The settings the version was compiled and measured with, as MLflow params (strings): the optimizer
    and each of its ``params`` as ``optimizer.<key>``, warm start, the data and the baseline. The
    compile step's record of its optimizer wins over the current configuration."""
    optimizer = compiled.get("optimizer") or spec.config.optimizer.model_dump()
    params: dict[str, Any] = {"optimizer": optimizer["name"]}
    params |= {f"optimizer.{key}": value for key, value in sorted((optimizer.get("params") or {}).items())}
    for key in ("time_limit_s", "reflection_lm"):
        if optimizer.get(key) is not None:
            params[f"optimizer.{key}"] = optimizer[key]
    chosen = compiled.get("optimizer_chosen")
    if chosen and chosen.get("name") != optimizer["name"]:  # auto: the portfolio's choice, with the settings it ran with
        params["optimizer.chosen"] = chosen["name"]
        params |= {f"optimizer.chosen.{key}": value for key, value in sorted((chosen.get("params") or {}).items())}
    params |= {
        "learned_from": "+".join(compiled.get("learned_from") or ["train"]),
        "warm_start": bool(optimizer.get("warm_start")), "warm_start_from": compiled.get("warm_start_from") or "none",
        "dataset_hash": dataset_hash, "partition": partition, "base_version": evaluation["baseline_version"],
        "evaluation_method": evaluation["evaluation_method"]["kind"], "metric": spec.config.metric.kind, "seed": spec.config.seed,
        "split": f"train {spec.config.split.train} / dev {spec.config.split.dev} / holdout {spec.config.split.holdout}",
        "min_holdout": spec.config.split.min_holdout,
    }
    return {key: _param(value) for key, value in params.items()}


def version_metrics(comparison: dict[str, Any], compiled: dict[str, Any] | None = None) -> dict[str, float]:
    """Held-out scores as metrics: means in [0, 1], the relative gain and its bootstrap bounds (deltaPpm / 10^6);
    with ``compiled``, every portfolio candidate's dev score and LM calls (``dev_score.<optimizer>``)."""
    portfolio: dict[str, float] = {}
    for candidate in (compiled or {}).get("candidates") or []:
        if candidate.get("dev_score") is not None:
            portfolio[f"dev_score.{candidate['optimizer']}"] = float(candidate["dev_score"])
        portfolio[f"dev_lm_calls.{candidate['optimizer']}"] = float(candidate.get("lm_calls") or 0)
    n = comparison["n"]
    if n <= 0:
        return portfolio
    metrics = {"baseline_mean": _mean(comparison["baseline_sum"], n), "candidate_mean": _mean(comparison["candidate_sum"], n),
               "delta": float(Fraction(comparison["delta_ppm"], SCALE))}
    for key, name in (("ci_low_ppm", "delta_ci_low"), ("ci_high_ppm", "delta_ci_high")):
        if comparison.get(key) is not None:
            metrics[name] = float(Fraction(comparison[key], SCALE))
    return metrics | {"eval_count": float(n), "deltaone": float(bool(comparison["deltaone"]))} | portfolio


def version_description(spec: ProgramSpec, window: str, evaluation: dict[str, Any], run_id: str, settings: Settings, compiled: dict[str, Any] | None = None) -> str:
    """One paragraph for the version page (and its run's description): what it scored, against what, where it was made."""
    comparison = evaluation["comparison"]
    n = comparison["n"]
    base = evaluation["baseline_version"]
    against = f"champion v{base}" if base else "the uncompiled program"
    if n > 0:
        b, c = _mean(comparison["baseline_sum"], n), _mean(comparison["candidate_sum"], n)
        delta = float(Fraction(comparison["delta_ppm"], SCALE))
        scored = f"held-out score {c:.4f} against {b:.4f} for {against} ({delta:+.2%}) on {n} examples"
    else:
        scored = f"not scored (no held-out examples), baseline {against}"
    chosen = ((compiled or {}).get("optimizer_chosen") or {}).get("name")
    how = f"{chosen} (chosen by auto on the dev split)" if chosen and chosen != spec.config.optimizer.name else spec.config.optimizer.name
    return (f"`{spec.name}` recompiled with {how} on the traces of {window}: {scored}. "
            f"Made by Dagster run {settings.dagster_run_url(run_id)}")


def version_artifacts(evaluation: dict[str, Any], sample_input: dict[str, Any], contributors: list[dict[str, Any]], trial_log: str = "") -> dict[str, str]:
    """File name → text: the A/B report, per-example scores, the sample input, the contributors, and
    what the optimizers logged while compiling it (their trials, kept off the terminal)."""
    files = {
        "ab_report.md": evaluation["ab_report"],
        "evaluation.json": json.dumps({k: evaluation[k] for k in EVALUATION_KEYS}, indent=1, sort_keys=True),
        SAMPLE_ARTIFACT: json.dumps(sample_input),
        "contributors.json": json.dumps(contributors, indent=1),
    }
    if trial_log:
        files["compile_log.txt"] = trial_log
    return files


def regression(comparison: dict[str, Any], version: int) -> str | None:
    """The ``no_regression`` gate's reason when C < B; None when the candidate is not worse."""
    b, c = comparison["baseline_sum"], comparison["candidate_sum"]
    return None if c >= b else f"C={c} < B={b}: v{version} is registered but kept out of serving"
