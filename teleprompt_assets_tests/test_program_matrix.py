"""Every program shape a user may bring × every optimizer the docs offer, end to end on a small window.

Each cell goes the way a compiled program goes in production: compile with the offline LM, the
blocking prompt check (demos and pool entries from accepted training traces only), evaluation
against the uncompiled program, registration into an MLflow store, ``mlflow.dspy.load_model`` and a
call of the loaded program. Budgets are tiny so the whole matrix fits the suite's time budget;
``benchmarks/program_matrix.py`` runs a larger window and prints the table.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import dspy
import mlflow
import polars as pl
import pytest
import yaml

from teleprompt_assets.core.lm import offline_lm
from teleprompt_assets.core.settings import load_settings
from teleprompt_assets.core.spec import ProgramSpec, load_project
from teleprompt_assets.core.tracking import connect, experiment_id
from teleprompt_assets.evaluate import deltaone, scoring
from teleprompt_assets.optimize import prompt_quality, teleprompters
from teleprompt_assets.register import registry
from teleprompt_assets.training import datasets, metrics
from teleprompt_assets_tests.conftest import set_env
from teleprompt_assets_tests.user_programs import traffic

MODULE = "teleprompt_assets_tests.user_programs.support_desk"


@dataclass(frozen=True)
class Shape:
    name: str
    module: str
    inputs: tuple[str, ...]
    metric: dict[str, Any]
    logs_intent: bool = True


SHAPES = (
    Shape("predict", f"{MODULE}:Classify", ("email",), {"kind": "exact_match", "field": "intent"}),
    Shape("chain_of_thought", f"{MODULE}:ThinkThenClassify", ("email",), {"kind": "exact_match", "field": "intent"}),
    Shape("two_step", f"{MODULE}:TriageAndDraft", ("email", "customer_name"), {"kind": "token_f1", "field": "reply"}),
    Shape("two_step_outcome", f"{MODULE}:TriageAndDraft", ("email", "customer_name"),
          {"kind": "outcome_model", "field": "reply", "outcome": "resolved"}),
)
# Tiny budgets: the point is that every pair compiles and survives the pipeline, not its quality.
OPTIMIZERS: dict[str, dict[str, Any]] = {
    "LabeledFewShot": {"k": 4},
    "BootstrapFewShot": {"max_bootstrapped_demos": 2, "max_labeled_demos": 4},
    "BootstrapFewShotWithRandomSearch": {"max_bootstrapped_demos": 2, "max_labeled_demos": 2, "num_candidate_programs": 1, "num_threads": 1},
    "COPRO": {"breadth": 2, "depth": 1},
    "MIPROv2": {"auto": None, "num_candidates": 2, "num_trials": 2, "max_bootstrapped_demos": 2, "max_labeled_demos": 2, "num_threads": 1},
    "GEPA": {"max_metric_calls": 12, "num_threads": 1, "reflection_minibatch_size": 2},
    "KNNFewShot": {"k": 3},
}
TRACES, DAYS = 48, 5


def cell_name(shape: str, optimizer: str) -> str:
    return f"{shape}_{optimizer.lower()}"


def project_yaml(shapes=SHAPES, optimizers=OPTIMIZERS) -> dict[str, Any]:
    """One program entry per cell, as a user would write them in ``teleprompt.yaml``."""
    programs = {
        cell_name(shape.name, name): {"module": shape.module, "metric": shape.metric, "optimizer": {"name": name, "params": params},
                                      "split": {"train": 50, "dev": 10, "holdout": 40}}
        for shape in shapes for name, params in optimizers.items()
    }
    return {"start_date": "2026-01-01", "window_days": DAYS, "programs": programs}


@dataclass(frozen=True)
class CellResult:
    demos: int
    pool: int
    comparison: deltaone.Comparison
    version: int
    answer: str
    seconds: float


def run_cell(spec: ProgramSpec, curated: pl.DataFrame, client, exp_id: str, window: str) -> CellResult:
    """The production path of one program on one window, raising on the first step that fails."""
    started = time.perf_counter()
    table = datasets.training_table(curated, spec)
    trainset = datasets.training_examples(table, spec)
    metric, _ = metrics.window_metric(spec, table)
    with dspy.context(lm=offline_lm()):
        result = teleprompters.compile_program(spec, trainset, metric, datasets.examples(table, spec, "dev"))
    by_id = {ex.trace_id: ex for ex in trainset}
    held_back = set(table.filter(pl.col("split") != "train")["trace_id"])
    check = prompt_quality.check_program(result.program, set(by_id), held_back, spec.config.prompt_token_budget)
    assert check.passed, check.problems
    assert_demos_match_their_sources(result.program, by_id, spec.input_fields)
    candidate = teleprompters.load_state(spec, result.state)
    holdout = datasets.examples(table, spec, "holdout")
    field = spec.config.metric.field or spec.output_fields[0]
    comparison = deltaone.compare(scoring.score_pair(spec.build(), candidate, holdout, metric, offline_lm(), field))
    assert comparison.n == len(holdout) > 0
    version = registry.register(client, spec, candidate, result.state, window, exp_id, {"optimizer": spec.config.optimizer.name})
    loaded = mlflow.dspy.load_model(version.uri)
    with dspy.context(lm=offline_lm()):
        answer = getattr(loaded(**holdout[0].inputs()), field)
    assert str(answer).strip()
    return CellResult(len(result.demos), len(result.pool), comparison, version.version, str(answer), time.perf_counter() - started)


def assert_demos_match_their_sources(program: dspy.Module, by_id: dict[str, dspy.Example], program_inputs: tuple[str, ...]) -> None:
    """A demo credited to a trace shows that trace's values for every program input it holds."""
    pool = getattr(program, "pool", [])
    for name, predictor in program.named_predictors():
        for demo in [*predictor.demos, *pool]:
            source = by_id[demo["trace_id"]]
            shown = [f for f in program_inputs if f in demo and f in predictor.signature.input_fields]
            assert all(demo[f] == source[f] for f in shown), (name, demo, source)


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("matrix")
    saved = set_env(work / "tp")
    try:
        config = work / "teleprompt.yaml"
        config.write_text(yaml.safe_dump(project_yaml()))
        specs = load_project(config)[1]
        settings = load_settings()
        client = connect(settings)
        yield specs, client, experiment_id(client, settings, "teleprompt-pipeline"), {}
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
def test_every_shape_compiles_checks_evaluates_registers_and_serves(matrix, shape: Shape, optimizer: str):
    specs, client, exp_id, timings = matrix
    spec = specs[cell_name(shape.name, optimizer)]
    curated = traffic.curated(spec.name, shape.inputs, TRACES, DAYS, log_intent=shape.logs_intent)
    result = run_cell(spec, curated, client, exp_id, "2026-01-01..2026-01-05")
    timings[spec.name] = result.seconds
    if optimizer == "KNNFewShot":
        assert result.pool > 0 and result.demos == 0
    elif optimizer in {"LabeledFewShot", "BootstrapFewShot"}:
        assert result.demos > 0
