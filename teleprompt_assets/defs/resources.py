"""Resources: where the MLflow store and the program registry are, resolved from settings."""


import dataclasses
from pathlib import Path

import dagster as dg
import dagster_mlflow
from dagster_mlflow.resources import MlFlow
from mlflow import MlflowClient
from pydantic import PrivateAttr

from teleprompt_assets.core.config import ProjectConfig
from teleprompt_assets.core.settings import Settings, load_settings
from teleprompt_assets.core.spec import ProgramSpec, load_project
from teleprompt_assets.core.tracking import connect, experiment_id


class TelepromptResource(dg.ConfigurableResource):
    """Settings come from the environment (DESIGN §4); fields here override them per deployment.

    Resolved once when a run (or a step process) sets the resource up: the settings, and the project
    read and validated from ``teleprompt.yaml`` once, so every asset of the step sees one config.
    Outside a run (a sensor, a test calling it directly) each call resolves afresh.
    """

    tracking_uri: str | None = None
    config_path: str | None = None
    _resolved: tuple[Settings, ProjectConfig, dict[str, ProgramSpec]] | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        settings = self._settings()
        self._resolved = (settings, *load_project(settings.config_path))

    def _settings(self) -> Settings:
        base = load_settings()
        overrides: dict = {}
        if self.tracking_uri:
            overrides |= {"tracking_uri": self.tracking_uri, "registry_uri": self.tracking_uri}
        if self.config_path:
            overrides["config_path"] = Path(self.config_path).resolve()
        return dataclasses.replace(base, **overrides)

    def _project(self) -> tuple[ProjectConfig, dict[str, ProgramSpec]]:
        if self._resolved is not None:
            return self._resolved[1], self._resolved[2]
        return load_project(self.settings().config_path)

    def settings(self) -> Settings:
        return self._resolved[0] if self._resolved is not None else self._settings()

    def client(self) -> MlflowClient:
        return connect(self.settings())

    def project(self) -> ProjectConfig:
        return self._project()[0]

    def spec(self, name: str) -> ProgramSpec:
        return self._project()[1][name]

    def experiment_id(self, client: MlflowClient, name: str) -> str:
        return experiment_id(client, self.settings(), name)


@dg.resource(config_schema=dagster_mlflow.mlflow_tracking.config_schema, required_resource_keys={"teleprompt"})
def pipeline_tracking(context: dg.InitResourceContext) -> MlFlow:
    """dagster-mlflow's run tracking (one MLflow run per Dagster run, tagged with its run id).

    Our experiments carry an explicit artifact location; dagster-mlflow would create its experiment
    without one (payloads in ./mlruns), so it is created here first.
    """
    teleprompt: TelepromptResource = context.resources.teleprompt
    teleprompt.experiment_id(teleprompt.client(), context.resource_config["experiment_name"])
    return MlFlow(context)
