"""Connecting to MLflow: tracking URI, experiments with explicit artifact locations and a description."""

from __future__ import annotations

import os
from collections.abc import Iterable

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Experiment

from teleprompt_assets.core.settings import Settings, ensure_home

NOTE_TAG = "mlflow.note.content"  # what MLflow's UI shows as an experiment's (or a run's) description
ROLE_TAG = "teleprompt.role"
PROGRAM_TAG = "program"
_NOTE_HEAD = "**teleprompt-assets**"  # a note starting so is ours to rewrite; any other stays as its author wrote it


def connect(settings: Settings) -> MlflowClient:
    """Point MLflow's global state at our store. Trace export is synchronous so nothing is lost.

    MLflow also keeps an "active model" (set by ``load_model``) that later metrics attach to; it
    belongs to whatever store was current then, so it is cleared here.
    """
    ensure_home(settings)
    mlflow.clear_active_model()
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "false")
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.registry_uri)
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)


def pipeline_note(settings: Settings) -> str:
    return (
        f"{_NOTE_HEAD}: the optimization pipeline's runs. Each Dagster run of the pipeline has one MLflow run here "
        "(tags `dagster_run_id`, `dagster_run_url`) with a child run per registered model version: the optimizer's settings "
        "as parameters, held-out scores in [0, 1] as metrics (`baseline_mean`, `candidate_mean`, `delta`), the model with its "
        "signature and input example, and the evaluation's files.\n\n"
        f"Dagster: {settings.dagster_asset_url('registered_version')}"
    )


def production_note(settings: Settings, programs: list[str]) -> str:
    named = ", ".join(f"`{p}`" for p in programs)
    return (
        f"{_NOTE_HEAD}: production traces of the DSPy program{'s' if len(programs) > 1 else ''} {named}, logged by the application "
        "with their feedback. teleprompt-assets reads them one UTC day at a time, curates them and recompiles the program on the "
        f"last window of days.\n\nDagster: {settings.dagster_asset_url('raw_traces')}"
    )


def traces_note() -> str:
    return (f"{_NOTE_HEAD}: traces of DSPy program calls. When a program in `teleprompt.yaml` names this experiment, "
            "teleprompt-assets reads its traces and recompiles the program from them.")


def experiment_tags(settings: Settings, name: str, programs: Iterable[str] = ()) -> dict[str, str]:
    """The tags ``name`` should carry: the pipeline's own experiment, or one holding the traces of ``programs``."""
    names = sorted(set(programs))
    tags: dict[str, str] = {}
    if names:
        tags |= {NOTE_TAG: production_note(settings, names), ROLE_TAG: "production", PROGRAM_TAG: ",".join(names)}
    if name == settings.pipeline_experiment:
        tags |= {NOTE_TAG: pipeline_note(settings), ROLE_TAG: "pipeline"}
    return tags


def describe(client: MlflowClient, experiment: Experiment, tags: dict[str, str], defaults: dict[str, str] | None = None) -> None:
    """Write the ``tags`` whose value differs and the ``defaults`` that are absent; nothing when all are
    there already. A description (``mlflow.note.content``) someone wrote is kept."""
    current = experiment.tags or {}
    wanted = {k: v for k, v in (defaults or {}).items() if k not in current} | tags
    for key, value in wanted.items():
        if current.get(key) == value:
            continue
        if key == NOTE_TAG and current.get(key) and not current[key].startswith(_NOTE_HEAD):
            continue
        _set_tag(client, experiment.experiment_id, key, value)


def _set_tag(client: MlflowClient, experiment_id: str, key: str, value: str) -> None:
    """MLflow's SQL store inserts a tag it does not see yet: two runs tagging one experiment at once
    collide on the second insert (UNIQUE constraint). The tag exists then, written by the other run;
    one more write replaces it with this value."""
    try:
        client.set_experiment_tag(experiment_id, key, value)
    except mlflow.exceptions.MlflowException:
        if key not in (client.get_experiment(experiment_id).tags or {}):
            raise
        client.set_experiment_tag(experiment_id, key, value)


def experiment_id(client: MlflowClient, settings: Settings, name: str, programs: Iterable[str] = ()) -> str:
    """Get or create; new experiments store payloads under our artifact root, never ./mlruns.

    Either way the experiment gets its description and tags (:func:`experiment_tags`): ``programs``
    names the programs whose traces it holds (tag ``program``); called without them, an experiment
    that has no description yet gets a generic one.
    """
    tags = experiment_tags(settings, name, programs)
    defaults = {NOTE_TAG: traces_note()}
    found = client.get_experiment_by_name(name)
    if found is None:
        location = f"{settings.artifact_root.rstrip('/')}/{name}" if settings.artifact_root else None
        try:
            return client.create_experiment(name, artifact_location=location, tags=defaults | tags)
        except mlflow.exceptions.MlflowException:
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    describe(client, found, tags, defaults)
    return found.experiment_id
