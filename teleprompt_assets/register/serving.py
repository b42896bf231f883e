"""Serving the champion from an application: the program comes from the registry, the LM from the app.

A registered version carries the program (demos, instructions) and none of the pipeline's DSPy
settings, so an application configures its own LM with ``dspy.configure(lm=...)``, before or after
loading, and loading never replaces it. ``load_champion`` is the checked way to load: it reads the
``champion`` alias and unpickles only from the pipeline's own artifact store (docs/security.md).
See docs/serving.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import dspy
from mlflow import MlflowClient

from teleprompt_assets.core.settings import load_settings
from teleprompt_assets.register import registry


@dataclass(frozen=True)
class Served:
    program: dspy.Module
    model: str
    version: int


def model_name(program: str) -> str:
    """The registered model of a program (DESIGN section 9)."""
    return f"teleprompt-{program}"


def load_champion(program: str, lm: dspy.BaseLM | None = None, client: MlflowClient | None = None) -> Served:
    """The version ``champion`` points at for ``program`` (its name in ``teleprompt.yaml``), ready to call.

    Without ``lm`` the program calls whatever LM DSPy is configured with when it runs. With one,
    that LM is bound to the program's predictors: for an app serving several programs on different
    LMs, or calling from threads that cannot reconfigure DSPy. DSPy's global settings are left as
    they were. The store is the pipeline's (``MLFLOW_TRACKING_URI``, else
    ``$TELEPROMPT_HOME/mlflow.db``) unless ``client`` names another; MLflow's tracking and registry
    URIs are left as the app set them. Load in the thread that configured DSPy: MLflow's loader calls ``dspy.configure``.
    """
    settings = load_settings()
    client = client or MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)
    name = model_name(program)
    version = registry.champion(client, name)
    if version is None:
        raise LookupError(f"{name} has no champion yet: `teleprompt run` registers and promotes one (`teleprompt status` shows it)")
    module = registry.load_registered_model(client, version, settings.pipeline_experiment)
    if lm is not None:
        module.set_lm(lm)
    return Served(module, name, int(version.version))
