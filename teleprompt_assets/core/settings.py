"""Where state lives. Every setting has an environment variable and a documented default (docs/architecture.md#state-stores)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname


@dataclass(frozen=True)
class Settings:
    home: Path
    tracking_uri: str
    registry_uri: str
    artifact_root: str | None  # URI of new experiments' artifacts; None: the tracking server's default
    config_path: Path
    pipeline_experiment: str
    mlflow_ui_url: str = "http://127.0.0.1:5000"
    dagster_ui_url: str = "http://127.0.0.1:3000"

    # Links between the two UIs: Dagster metadata points into MLflow, MLflow tags point back.
    def model_version_url(self, name: str, version: int) -> str:
        return f"{self.mlflow_ui_url.rstrip('/')}/#/models/{name}/versions/{version}"

    def mlflow_run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.mlflow_ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    def experiment_traces_url(self, experiment_id: str) -> str:
        return f"{self.mlflow_ui_url.rstrip('/')}/#/experiments/{experiment_id}/traces"

    def dagster_run_url(self, run_id: str) -> str:
        return f"{self.dagster_ui_url.rstrip('/')}/runs/{run_id}"

    def dagster_asset_url(self, asset: str) -> str:
        return f"{self.dagster_ui_url.rstrip('/')}/assets/{asset}"

    @property
    def keystore_dir(self) -> Path:
        return self.home / "keys"

    @property
    def outbox(self) -> Path:
        return self.home / "outbox"

    storage_url: str = ""  # asset outputs: a folder or s3://bucket/prefix (core/object_store.py)

    @property
    def storage(self) -> str:
        return self.storage_url or str(self.home / "storage")

    @property
    def dagster_home(self) -> Path:
        return Path(os.environ.get("DAGSTER_HOME") or self.home / "dagster")


def _is_uri(value: str) -> bool:
    scheme, sep, _ = value.partition(":")
    return bool(sep) and len(scheme) > 1 and scheme.replace("-", "").replace("+", "").isalnum()


def artifact_root(value: str | None, home: Path, tracking_uri: str) -> str | None:
    """Where experiments we create keep their artifacts.

    A URI (``mlflow-artifacts:/…`` for the tracking server's proxy, ``s3://…``) is used as given, a
    path as a ``file://`` folder. Unset: with a tracking *server* (http/https), None, so the server's
    own default applies: ``mlflow server`` serves artifacts by default, and then run workers never
    need a path or credentials of their own; with a local store, ``$TELEPROMPT_HOME/artifacts``.
    """
    if value:
        return value if _is_uri(value) else Path(value).resolve().as_uri()
    if tracking_uri.startswith(("http://", "https://")):
        return None
    return (home / "artifacts").resolve().as_uri()


class SettingsError(ValueError):
    """An environment variable that cannot be used: the message names it and the fix."""


def load_settings() -> Settings:
    """Read settings from the environment at call time, so tests can point them at temp dirs."""
    home = Path(os.environ.get("TELEPROMPT_HOME", ".teleprompt")).resolve()
    tracking = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"
    storage = os.environ.get("TELEPROMPT_STORAGE_URL") or ""
    if storage:
        from teleprompt_assets.core.object_store import open_store

        try:
            open_store(storage)
        except ValueError as exc:
            raise SettingsError(f"TELEPROMPT_STORAGE_URL: {exc}") from None
    return Settings(
        home=home,
        tracking_uri=tracking,
        registry_uri=os.environ.get("MLFLOW_REGISTRY_URI") or tracking,
        artifact_root=artifact_root(os.environ.get("TELEPROMPT_ARTIFACT_ROOT"), home, tracking),
        storage_url=storage if _is_uri(storage) else (str(Path(storage).resolve()) if storage else ""),
        config_path=Path(os.environ.get("TELEPROMPT_CONFIG", "teleprompt.yaml")).resolve(),
        pipeline_experiment=os.environ.get("TELEPROMPT_PIPELINE_EXPERIMENT", "teleprompt-pipeline"),
        mlflow_ui_url=os.environ.get("TELEPROMPT_MLFLOW_UI_URL") or "http://127.0.0.1:5000",
        dagster_ui_url=os.environ.get("TELEPROMPT_DAGSTER_UI_URL") or "http://127.0.0.1:3000",
    )


def ensure_home(settings: Settings) -> None:
    folders = [settings.home, settings.outbox]
    if settings.artifact_root and settings.artifact_root.startswith("file:"):
        folders.append(Path(url2pathname(urlparse(settings.artifact_root).path)))
    if not _is_uri(settings.storage):
        folders.append(Path(settings.storage))
    for path in folders:
        path.mkdir(parents=True, exist_ok=True)


EXECUTOR_ENV = "TELEPROMPT_EXECUTOR"
EXECUTORS = ("multiprocess", "celery")
CELERY_ENV = (("TELEPROMPT_CELERY_BROKER", "redis://host:6379/0"), ("TELEPROMPT_CELERY_BACKEND", "redis://host:6379/1"))


def executor_setting() -> str:
    """Where the optimization job's steps run (``TELEPROMPT_EXECUTOR``), checked with what it needs."""
    chosen = os.environ.get(EXECUTOR_ENV) or "multiprocess"
    if chosen not in EXECUTORS:
        raise SettingsError(f"{EXECUTOR_ENV}={chosen!r}: not an executor; use one of {', '.join(EXECUTORS)}")
    if chosen == "celery":
        for var, example in CELERY_ENV:
            if not os.environ.get(var):
                raise SettingsError(f"{EXECUTOR_ENV}=celery needs {var}, which every worker reads too (e.g. {example}; deploy/dagster-celery.yaml)")
    return chosen
