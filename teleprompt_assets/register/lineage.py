"""What a model version carries: its lineage tags and the files that travel with it (DESIGN §9).

Built from the stage outputs of one program × day, so the version's own MLflow run describes that
version alone, whatever else its Dagster run optimized.
"""

from __future__ import annotations

import json
from typing import Any

from teleprompt_assets.core.spec import ProgramSpec
from teleprompt_assets.register.registry import SAMPLE_ARTIFACT

EVALUATION_KEYS = ("baseline_version", "evaluation_method", "comparison", "scores")


def version_tags(spec: ProgramSpec, partition: str, dataset_hash: str, run_id: str, compiled: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
    comparison = evaluation["comparison"]
    return {
        "base_version": evaluation["baseline_version"], "partition": partition, "dataset_hash": dataset_hash,
        "evaluation_method": evaluation["evaluation_method"]["kind"], "optimizer": spec.config.optimizer.name,
        "optimizer_config": json.dumps(spec.config.optimizer.params, sort_keys=True), "dagster_run_id": run_id,
        "baseline_score": comparison["baseline_sum"], "candidate_score": comparison["candidate_sum"], "eval_count": comparison["n"],
        "delta_ppm": comparison["delta_ppm"], "deltaone": comparison["deltaone"],
        "contributor_count": len({d["contributor"] for d in compiled["data_traces"]}),
    }


def version_artifacts(evaluation: dict[str, Any], sample_input: dict[str, Any], contributors: list[dict[str, Any]]) -> dict[str, str]:
    """File name → text: the A/B report, per-example scores, the sample input, the contributors."""
    return {
        "ab_report.md": evaluation["ab_report"],
        "evaluation.json": json.dumps({k: evaluation[k] for k in EVALUATION_KEYS}, indent=1, sort_keys=True),
        SAMPLE_ARTIFACT: json.dumps(sample_input),
        "contributors.json": json.dumps(contributors, indent=1),
    }


def regression(comparison: dict[str, Any], version: int) -> str | None:
    """The ``no_regression`` gate's reason when C < B; None when the candidate is not worse."""
    b, c = comparison["baseline_sum"], comparison["candidate_sum"]
    return None if c >= b else f"C={c} < B={b}: v{version} is registered but kept out of serving"
