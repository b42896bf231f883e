"""Resources: where the MLflow store and the program registry are, resolved from settings."""


import dataclasses
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import dagster_mlflow
import dspy
from dagster_mlflow.resources import MlFlow
from mlflow import MlflowClient
from pydantic import PrivateAttr

from teleprompt_assets.core.config import ProjectConfig
from teleprompt_assets.core.gateway import GatewayStats, gateway_of, pipeline_lm
from teleprompt_assets.core.settings import Settings, load_settings
from teleprompt_assets.core.spec import ProgramSpec, load_project
from teleprompt_assets.core.tracking import connect, experiment_id


class TelepromptResource(dg.ConfigurableResource):
    """Settings come from the environment (docs/architecture.md#state-stores); fields here override them per deployment.

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
        """Get or create, tagged with the programs that log to it (so it says whose traces it holds)."""
        programs = [p for p, c in self.project().programs.items() if c.experiment == name]
        return experiment_id(client, self.settings(), name, programs=programs)

    def lm(self, run_id: str, build: Callable[..., dspy.LM]) -> dspy.LM:
        """The LM a step calls, behind the gateway (``core/gateway.py``) with the project's ``lm`` settings;
        the run id scopes the budget, so every step of one run spends from one budget. ``build`` makes
        the LM itself (``core.lm.build_lm``), without retries of its own: the gateway retries."""
        config = self.project().lm
        if retries := os.environ.get("TELEPROMPT_LM_RETRIES", "").strip():
            config = config.model_copy(update={"retries": int(retries)})
        return pipeline_lm(build(num_retries=0, timeout_s=config.timeout_s), config, self.settings().home, run_id)


@dg.resource(config_schema=dagster_mlflow.mlflow_tracking.config_schema, required_resource_keys={"teleprompt"})
def pipeline_tracking(context: dg.InitResourceContext) -> MlFlow:
    """dagster-mlflow's run tracking (one MLflow run per Dagster run, tagged with its run id).

    Our experiments carry an explicit artifact location; dagster-mlflow would create its experiment
    without one (payloads in ./mlruns), so it is created here first.
    """
    teleprompt: TelepromptResource = context.resources.teleprompt
    client = teleprompt.client()
    experiment = teleprompt.experiment_id(client, context.resource_config["experiment_name"])
    own = _dagster_runs_own(client, experiment, context.run_id)
    return MlFlow(_Pinned(context, own) if own else context)


def _dagster_runs_own(client: MlflowClient, experiment_id: str, dagster_run_id: str) -> str | None:
    """The Dagster run's own MLflow run: the top-level one tagged with its id.

    dagster-mlflow looks a run up by the ``dagster_run_id`` tag and takes the first match, and each
    model version's child run carries that tag too (its lineage): a step starting after registration
    resumed a version's run, logged its figures there and left it RUNNING. Pinned here, every step
    resumes the parent."""
    runs = client.search_runs([experiment_id], f"tags.dagster_run_id = '{dagster_run_id}'", max_results=50)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return min(parents, key=lambda r: (r.info.start_time, r.info.run_id)).info.run_id if parents else None


class _Pinned:
    """``context`` with ``mlflow_run_id`` set in its resource config (read by dagster-mlflow's MlFlow)."""

    def __init__(self, context: dg.InitResourceContext, run_id: str) -> None:
        self._context = context
        self.resource_config = {**context.resource_config, "mlflow_run_id": run_id}

    def __getattr__(self, name: str):
        return getattr(self._context, name)


def budget_stop(lm: dspy.LM, what: str) -> None:
    """Fail the step, without retries, once the run's LM budget is spent (an optimizer may have swallowed the refusal)."""
    gateway = gateway_of(lm)
    if gateway is not None and gateway.exhausted:
        raise dg.Failure(description=f"{what}: {gateway.exhausted}", allow_retries=False, metadata={"lm_budget": "exhausted"})


@contextmanager
def lm_stage(lm: dspy.LM, what: str) -> Iterator[GatewayStats]:
    """What the block spent through ``lm``'s gateway, filled in when it ends; a spent budget fails the step cleanly."""
    gateway = gateway_of(lm)
    before = gateway.stats()
    spent = GatewayStats()
    try:
        yield spent
    except Exception:
        budget_stop(lm, what)
        raise
    finally:
        for name, value in dataclasses.asdict(gateway.stats() - before).items():
            setattr(spent, name, value)
