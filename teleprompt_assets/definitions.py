"""Dagster definitions, built from ``teleprompt.yaml`` (``TELEPROMPT_CONFIG``) at load time."""

from __future__ import annotations

import os

import dagster as dg
from dagster_mlflow import end_mlflow_on_run_finished

from teleprompt_assets.attest.bundles import default_domain
from teleprompt_assets.core.settings import executor_setting, load_settings
from teleprompt_assets.core.spec import load_project
from teleprompt_assets.defs.alerting import ALERT_RESOURCE, AlertingResource, build_alerting
from teleprompt_assets.defs.assets import build_assets
from teleprompt_assets.defs.automation import build_automation
from teleprompt_assets.defs.io import TableIOManager
from teleprompt_assets.defs.jobs import rollback_job
from teleprompt_assets.defs.partitions import program_day_partitions
from teleprompt_assets.defs.resources import TelepromptResource, pipeline_tracking

OPTIMIZE_JOB = "optimize_program"
PRELOAD = ["mlflow.store.tracking.sqlalchemy_store", "mlflow.store.model_registry.sqlalchemy_store", "alembic.command", "alembic.migration",
           "mlflow.dspy", "dagster._core.storage.sqlite_storage"]
INGEST_JOB = "ingest_traces"
# A run the daemon retries (deploy/dagster.yaml's run_retries: its worker died) runs every step again,
# not only those after the failure: every step is idempotent and the LM answer cache makes the repeat
# cheap, while resuming "from failure" once handed the per-program fan-in step no compiled programs
# (a fresh-clone CI run of test_daemon, its worker killed early in the run; not reproduced locally).
RETRY_ALL_STEPS = {"dagster/retry_strategy": "ALL_STEPS"}


def step_executor() -> dg.ExecutorDefinition:
    """Where the optimization job's steps run: ``TELEPROMPT_EXECUTOR`` (``multiprocess``, the default,
    or ``celery``). The same definitions serve one host and a cluster; only the environment differs."""
    return celery_steps() if executor_setting() == "celery" else forkserver_steps()


def celery_steps() -> dg.ExecutorDefinition:
    """Each step a Celery task, taken by ``dagster-celery`` workers on any machine (deploy/dagster-celery.yaml).

    The broker and result backend come from ``TELEPROMPT_CELERY_BROKER`` and
    ``TELEPROMPT_CELERY_BACKEND``, which the workers read too (deploy/dagster-celery.yaml). Steps hand their outputs
    over through the IO manager, so with workers on several machines ``TELEPROMPT_STORAGE_URL`` must
    be object storage. ``task_acks_late``: a task whose worker died is delivered again.
    """
    from dagster_celery import celery_executor

    config = {"broker": {"env": "TELEPROMPT_CELERY_BROKER"}, "backend": {"env": "TELEPROMPT_CELERY_BACKEND"}, "config_source": {"task_acks_late": True}}
    return celery_executor.configured(config, name="celery")


def forkserver_steps() -> dg.ExecutorDefinition:
    """The multiprocess executor, forking steps from a server that has imported this module once:
    spawning would import dagster, mlflow and dspy again for every step (docs/architecture.md#runs). Parallel steps
    are the per-program compiles; ``TELEPROMPT_MAX_PARALLEL_STEPS`` caps them (default: CPU count)."""
    limit = int(os.environ.get("TELEPROMPT_MAX_PARALLEL_STEPS", "0")) or os.cpu_count() or 1
    # named explicitly: dagster reads a missing preload_modules as an empty list, not as "this module";
    # the stores' modules are otherwise imported lazily by every step
    preload = {"preload_modules": [__name__, *PRELOAD]}
    return dg.multiprocess_executor.configured({"max_concurrent": limit, "start_method": {"forkserver": preload}}, name="multiprocess_forkserver")


def build_definitions() -> dg.Definitions:
    settings = load_settings()
    project, specs = load_project(settings.config_path)
    default_domain()  # a bad TELEPROMPT_EAS_CONTRACT fails loading, not a run's last step after it registered a version
    partitions = program_day_partitions(project.start_date, list(specs))
    assets = build_assets(partitions, project.window_days)
    job = dg.define_asset_job(
        OPTIMIZE_JOB, selection=dg.AssetSelection.assets(*assets),
        executor_def=step_executor(), hooks={end_mlflow_on_run_finished}, tags=RETRY_ALL_STEPS,
        description="Ingest, curate, optimize, evaluate, register and attest the run's programs for one day; each program compiles in its own step.",
    )
    ingest = dg.define_asset_job(
        INGEST_JOB, selection=dg.AssetSelection.assets("raw_traces").downstream(depth=1) - dg.AssetSelection.assets("training_set"),
        executor_def=dg.in_process_executor, hooks={end_mlflow_on_run_finished}, tags=RETRY_ALL_STEPS,
        description="Ingest and curate one program's traces for one day (backfills of the training window).",
    )
    automation = project.automation
    schedule, sensor = build_automation(job, partitions, sorted(specs), project.start_date.isoformat(), project.window_days, automation)
    alert_sensors = build_alerting(automation.alerts, project.window_days)
    return dg.Definitions(
        assets=assets,
        jobs=[job, ingest, rollback_job],
        schedules=[schedule],
        sensors=[sensor, *alert_sensors],
        resources={
            "teleprompt": TelepromptResource(),
            ALERT_RESOURCE: AlertingResource(),
            "mlflow": pipeline_tracking.configured({"experiment_name": settings.pipeline_experiment, "mlflow_tracking_uri": settings.tracking_uri}),
            "io_manager": TableIOManager(base_url=str(settings.storage)),
        },
    )


defs = build_definitions()

