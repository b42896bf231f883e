"""Figures mirrored into the Dagster run's MLflow run (dagster-mlflow), one namespace per program."""

import dagster as dg
from dagster_mlflow.resources import MlFlow

from teleprompt_assets.core.settings import Settings
from teleprompt_assets.defs.partitions import Target

Tracking = dg.ResourceParam[MlFlow]


def track(tracking: MlFlow | None, target: Target, tags: dict | None = None, metrics: dict | None = None) -> None:
    """Keys are prefixed with the program: one run may hold several. Descriptions go in tags, which a
    later day of a multi-day run overwrites; metrics keep one point per day. A job built without the
    MLflow resource (one op run alone) tracks nothing."""
    if tracking is None:
        return
    prefix = f"{target.program}."
    if tags:
        tracking.set_tags({prefix + k: str(v)[:500] for k, v in tags.items()})
    if metrics:
        tracking.log_metrics({prefix + k: float(v) for k, v in metrics.items()})


def link_run(tracking: MlFlow, settings: Settings, run_id: str) -> None:
    """The Dagster run's MLflow run links back to it (dagster-mlflow tags ``dagster_run_id`` only)."""
    tracking.set_tags({"dagster_run_url": settings.dagster_run_url(run_id)})
