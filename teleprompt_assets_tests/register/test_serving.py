"""How an application serves the champion (docs/serving.md; issue 20, item 4).

The LM is the application's: a registered version carries none, and loading one never replaces the
LM the application configured, whether it configured DSPy before loading or after. Versions are
registered into a temporary sqlite store as the pipeline registers them; the LM is the offline LM.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys

import dspy
import mlflow
import pytest

from teleprompt_assets.core.lm import offline_lm
from teleprompt_assets.core.settings import load_settings
from teleprompt_assets.core.spec import load_project
from teleprompt_assets.core.tracking import connect, experiment_id
from teleprompt_assets.optimize.teleprompters import load_state, program_state
from teleprompt_assets.register import registry, serving
from teleprompt_assets.register.artifacts import TamperedArtifact
from teleprompt_assets_tests.conftest import REPO

SAMPLE = {"message": "my parcel never arrived"}
CHAMPION_URI = "models:/teleprompt-ticket_router@champion"


@pytest.fixture(autouse=True)
def app_settings():
    """Each test starts from DSPy's defaults and leaves them as it found them: what an app
    configures is process-wide."""
    dspy_settings = importlib.import_module("dspy.dsp.utils.settings")

    saved = dict(dspy_settings.main_thread_config)
    dspy_settings.main_thread_config.update(lm=None, adapter=None, callbacks=[])
    yield
    dspy_settings.main_thread_config.clear()
    dspy_settings.main_thread_config.update(saved)


@pytest.fixture
def store(tp_home):
    settings = load_settings()
    client = connect(settings)
    spec = load_project(settings.config_path)[1]["ticket_router"]
    return client, spec, experiment_id(client, settings, settings.pipeline_experiment)


def _champion(store, queue: str = "shipping", window: str = "2026-01-01..2026-01-07") -> registry.RegisteredVersion:
    client, spec, exp = store
    program = spec.build()
    program.route.demos = [dspy.Example(message="my parcel never arrived", queue=queue)]
    state = program_state(program)
    version = registry.register(client, spec, load_state(spec, state), state, window, exp, {"base_version": 0},
                                {registry.SAMPLE_ARTIFACT: json.dumps(SAMPLE)})
    registry.promote(client, spec.registered_model_name, version.version, "test")
    return version


@pytest.mark.parametrize("order", ["configure, then load", "load, then configure"])
def test_plain_mlflow_load_model_keeps_the_lm_the_app_configured(store, order):
    _champion(store)
    lm = offline_lm()
    if order == "configure, then load":
        dspy.configure(lm=lm)
        program = mlflow.dspy.load_model(CHAMPION_URI)
    else:
        program = mlflow.dspy.load_model(CHAMPION_URI)
        dspy.configure(lm=lm)
    assert dspy.settings.lm is lm
    assert program(message="my parcel never arrived at all").queue == "shipping"
    assert dspy.settings.lm is lm


def test_loading_keeps_the_apps_other_settings_too(store):
    """Only DSPy's callbacks travel with a version (MLflow's loader needs the key): the adapter and
    everything else stay as the app set them."""
    _champion(store)
    lm, adapter = offline_lm(), dspy.JSONAdapter()
    dspy.configure(lm=lm, adapter=adapter, track_usage=True)
    mlflow.dspy.load_model(CHAMPION_URI)
    assert (dspy.settings.lm, dspy.settings.adapter, dspy.settings.track_usage) == (lm, adapter, True)


def test_the_registered_version_carries_its_signature_and_a_sample_input(store):
    client, spec, _ = store
    version = _champion(store)
    info = mlflow.models.get_model_info(version.uri)
    assert info.signature.inputs.input_names() == list(spec.input_fields)
    assert info.signature.outputs.input_names() == list(spec.output_fields)
    local = mlflow.artifacts.download_artifacts(version.uri)
    assert mlflow.models.Model.load(local).load_input_example(local) == SAMPLE
    # and the pyfunc flavor answers that sample with the app's LM
    dspy.configure(lm=offline_lm())
    assert mlflow.pyfunc.load_model(version.uri).predict(SAMPLE) == {"queue": "shipping"}


@pytest.mark.parametrize("order", ["configure, then load", "load, then configure"])
def test_load_champion_keeps_the_apps_lm_and_callbacks(store, order):
    version = _champion(store)
    lm, tracer = offline_lm(), object()
    if order == "configure, then load":
        dspy.configure(lm=lm, callbacks=[tracer])
        served = serving.load_champion("ticket_router")
    else:
        served = serving.load_champion("ticket_router")
        dspy.configure(lm=lm, callbacks=[tracer])
    assert dspy.settings.lm is lm and dspy.settings.callbacks == [tracer]
    assert (served.model, served.version) == ("teleprompt-ticket_router", version.version)
    assert served.program(message="my parcel never arrived at all").queue == "shipping"


def test_load_champion_binds_an_lm_it_is_given_and_leaves_the_global_one_alone(store):
    _champion(store)
    global_lm, own_lm = offline_lm(), offline_lm()
    dspy.configure(lm=global_lm)
    served = serving.load_champion("ticket_router", lm=own_lm)
    assert dspy.settings.lm is global_lm
    assert all(p.lm is own_lm for p in served.program.predictors())
    with dspy.context(lm=None):
        assert served.program(message="my parcel never arrived at all").queue == "shipping"


def test_load_champion_refuses_a_version_nothing_vouches_for_and_unpickles_nothing(store):
    """A version logged with plain ``mlflow.dspy.log_model`` (all of DSPy's settings pickled, no JSON
    state, no registered hash) used to be unpickled, restoring ``lm=None``. Nothing vouches for its
    artifacts: it is refused in one line, and the app's settings are untouched."""
    client, spec, exp = store
    name = spec.registered_model_name
    _champion(store)  # creates the registered model
    program = spec.build()
    program.route.demos = [dspy.Example(message="my parcel never arrived", queue="shipping")]
    with mlflow.start_run(experiment_id=exp) as run, dspy.context(lm=None):
        info = mlflow.dspy.log_model(program, name=registry.MODEL_ARTIFACT, pip_requirements=registry.pip_requirements())
    old = client.create_model_version(name, info.model_uri, run_id=run.info.run_id, model_id=info.model_id)
    client.set_registered_model_alias(name, registry.CHAMPION, str(old.version))
    lm = offline_lm()
    dspy.configure(lm=lm)
    with pytest.raises(TamperedArtifact, match=rf"^{name} v{old.version}: no attestation and no registered program_hash vouch for its artifacts; not loaded$"):
        serving.load_champion("ticket_router")
    assert dspy.settings.lm is lm


def test_load_champion_without_a_champion_says_what_to_do(store):
    with pytest.raises(LookupError, match=r"teleprompt-ticket_router has no champion.*teleprompt run"):
        serving.load_champion("ticket_router")


def _docs_python() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "docs" / "serving.md").read_text(), re.S)


def test_the_docs_examples_run_as_written(store, tp_home):
    """Each ``python`` block of docs/serving.md, in a fresh interpreter pointed at a store whose
    champion the pipeline registered."""
    _champion(store)
    blocks = _docs_python()
    assert len(blocks) >= 2
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TELEPROMPT_", "DAGSTER_"))}
    env |= {"TELEPROMPT_HOME": str(tp_home), "TELEPROMPT_CONFIG": str(REPO / "teleprompt.yaml"), "PYTHONWARNINGS": "ignore"}
    for block in blocks:
        done = subprocess.run([sys.executable, "-c", block], cwd=tp_home, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (block, done.stderr[-3000:])
        assert "shipping" in done.stdout, (block, done.stdout)
