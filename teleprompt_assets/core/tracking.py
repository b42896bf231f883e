"""Connecting to MLflow: tracking URI, experiments with explicit artifact locations."""

from __future__ import annotations

import os

import mlflow
from mlflow import MlflowClient

from teleprompt_assets.core.settings import Settings, ensure_home


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


def experiment_id(client: MlflowClient, settings: Settings, name: str) -> str:
    """Get or create; new experiments store payloads under our artifact root, never ./mlruns."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = (settings.artifact_root / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id
