"""The compile step under its retry policy: a deterministic failure runs once and says why; only a
transient LM failure is attempted again.

The real ``compile_program`` op runs in a two-op job (a feeder stands in for ``training_set``) with
the policy ``build_compiled_program`` attaches, so what is counted is Dagster's own step attempts.
"""

from __future__ import annotations

import json

import dagster as dg
import polars as pl
import pytest
from dspy.utils import exceptions as dspy_errors

from teleprompt_assets.core.spec import load_project
from teleprompt_assets.curate.validation import CURATED_SCHEMA
from teleprompt_assets.defs.io import ByPartition
from teleprompt_assets.defs.optimize import compile_program
from teleprompt_assets.defs.resources import TelepromptResource
from teleprompt_assets.optimize import teleprompters
from teleprompt_assets.training import datasets
from teleprompt_assets_tests.conftest import REPO, project_config

KEY = "2026-01-05|ticket_router"
RETRIES = 2


BOOTSTRAP = {"name": "BootstrapFewShot", "params": {"max_bootstrapped_demos": 4, "max_labeled_demos": 24}}


@pytest.fixture(autouse=True)
def bootstrap_config(tp_home, tmp_path):
    """These failures are BootstrapFewShot's: the compile step runs that one teleprompter."""
    with project_config(tmp_path, "ticket_router", optimizer=BOOTSTRAP) as path:
        yield path


def _training_set() -> ByPartition:
    spec = load_project(REPO / "teleprompt.yaml")[1]["ticket_router"]
    rows = [{"trace_id": f"t{i}", "timestamp_ms": i, "state": "OK", "experiment_id": "1", "program": "ticket_router",
             "contributor": "0x" + "a" * 40, "inputs": json.dumps({"message": f"my parcel number {i} never arrived"}),
             "outputs": '{"queue": "shipping"}', "feedback": "{}", "expectations": '{"queue": "shipping"}', "trace_hash": f"0x{i:064x}"}
            for i in range(20)]
    return ByPartition({KEY: datasets.training_table(pl.DataFrame(rows, schema=CURATED_SCHEMA), spec)})


def _run_compile() -> dg.ExecuteInProcessResult:
    @dg.op(out={"key": dg.Out(str), "training_set": dg.Out()})
    def feed():
        yield dg.Output(KEY, "key")
        yield dg.Output(_training_set(), "training_set")

    @dg.job(resource_defs={"teleprompt": TelepromptResource(), "mlflow": dg.ResourceDefinition.hardcoded_resource(None)})
    def compile_once():
        key, training_set = feed()
        compile_program.with_retry_policy(dg.RetryPolicy(max_retries=RETRIES, delay=0))(key, training_set)

    with dg.instance_for_test() as instance:
        return compile_once.execute_in_process(instance=instance, raise_on_error=False)


def _attempts(result: dg.ExecuteInProcessResult) -> int:
    starts = (dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_RESTARTED)
    return sum(1 for e in result.all_events if e.step_key == "compile_program" and e.event_type in starts)


def _failure(result: dg.ExecuteInProcessResult) -> str:
    failure = next(e for e in result.all_events if e.is_step_failure and e.step_key == "compile_program")
    return failure.step_failure_data.user_failure_data.description


class RefusesItsMetric:
    """What GEPA did with a three-argument metric: refuse it in the constructor, before compile runs.
    (Its parameters are BootstrapFewShot's, so the config still loads.)"""

    def __init__(self, metric=None, metric_threshold=None, max_bootstrapped_demos=4, max_labeled_demos=16):
        raise TypeError("GEPA metric must accept five arguments: (gold, pred, trace, pred_name, pred_trace)")


class RateLimited:
    def __init__(self, metric=None, metric_threshold=None, max_bootstrapped_demos=4, max_labeled_demos=16):
        pass

    def compile(self, student, *, trainset):
        raise dspy_errors.LMRateLimitError("429 from the provider")


def test_an_optimizer_that_cannot_be_built_fails_once_with_its_reason(tp_home, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(teleprompters.OPTIMIZERS, "BootstrapFewShot", RefusesItsMetric)
    result = _run_compile()
    assert not result.success
    assert _attempts(result) == 1
    assert "ticket_router: compile failed, nothing registered" in _failure(result)
    assert "TypeError: GEPA metric must accept five arguments" in _failure(result)


def test_an_unexpected_error_in_the_compile_step_fails_once(tp_home, monkeypatch: pytest.MonkeyPatch):
    def broken(*args, **kwargs):
        raise KeyError("queue")

    monkeypatch.setattr(teleprompters, "compile_program", broken)
    result = _run_compile()
    assert _attempts(result) == 1
    assert "compile failed, nothing registered: KeyError: 'queue'" in _failure(result)


def test_a_transient_lm_failure_is_retried(tp_home, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(teleprompters.OPTIMIZERS, "BootstrapFewShot", RateLimited)
    result = _run_compile()
    assert _attempts(result) == RETRIES + 1
    assert "LMRateLimitError: 429 from the provider (transient LM failure)" in _failure(result)


def test_under_auto_a_candidate_that_cannot_be_built_is_recorded_and_the_others_compete(tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(teleprompters.OPTIMIZERS, "BootstrapFewShot", RefusesItsMetric)
    with project_config(tmp_path, "ticket_router", optimizer={"name": "auto", "params": {"candidates": ["BootstrapFewShot", "KNNFewShot"]}}):
        result = _run_compile()
    assert result.success
    compiled = result.output_for_node("compile_program")["value"]
    notes = {c["optimizer"]: c["note"] for c in compiled["candidates"]}
    assert notes["BootstrapFewShot"].startswith("failed: BootstrapFewShot could not compile") and "GEPA metric" in notes["BootstrapFewShot"]
    assert notes["KNNFewShot"].startswith("chosen") and compiled["optimizer_chosen"]["name"] == "KNNFewShot"


def test_under_auto_a_transient_lm_failure_still_fails_the_step_for_its_retry(tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(teleprompters.OPTIMIZERS, "BootstrapFewShot", RateLimited)
    with project_config(tmp_path, "ticket_router", optimizer={"name": "auto", "params": {"candidates": ["BootstrapFewShot", "KNNFewShot"]}}):
        result = _run_compile()
    assert _attempts(result) == RETRIES + 1 and "LMRateLimitError" in _failure(result)
