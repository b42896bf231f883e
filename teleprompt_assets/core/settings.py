"""Where state lives. Every setting has an environment variable and a documented default (DESIGN §4)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    home: Path
    tracking_uri: str
    registry_uri: str
    artifact_root: Path
    config_path: Path
    pipeline_experiment: str
    mlflow_ui_url: str = "http://127.0.0.1:5000"
    dagster_ui_url: str = "http://127.0.0.1:3000"

    # Links between the two UIs (issue 18): Dagster metadata points into MLflow, MLflow tags point back.
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

    @property
    def storage(self) -> Path:
        return self.home / "storage"

    @property
    def dagster_home(self) -> Path:
        return Path(os.environ.get("DAGSTER_HOME") or self.home / "dagster")


def load_settings() -> Settings:
    """Read settings from the environment at call time, so tests can point them at temp dirs."""
    home = Path(os.environ.get("TELEPROMPT_HOME", ".teleprompt")).resolve()
    tracking = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"
    return Settings(
        home=home,
        tracking_uri=tracking,
        registry_uri=os.environ.get("MLFLOW_REGISTRY_URI") or tracking,
        artifact_root=Path(os.environ.get("TELEPROMPT_ARTIFACT_ROOT") or home / "artifacts").resolve(),
        config_path=Path(os.environ.get("TELEPROMPT_CONFIG", "teleprompt.yaml")).resolve(),
        pipeline_experiment=os.environ.get("TELEPROMPT_PIPELINE_EXPERIMENT", "teleprompt-pipeline"),
        mlflow_ui_url=os.environ.get("TELEPROMPT_MLFLOW_UI_URL") or "http://127.0.0.1:5000",
        dagster_ui_url=os.environ.get("TELEPROMPT_DAGSTER_UI_URL") or "http://127.0.0.1:3000",
    )


def ensure_home(settings: Settings) -> None:
    for path in (settings.home, settings.artifact_root, settings.outbox, settings.storage):
        path.mkdir(parents=True, exist_ok=True)
