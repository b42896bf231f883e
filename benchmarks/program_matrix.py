"""Program shapes × optimizers (offline LM): does every pair go through the pipeline, and at what cost.

The suite's ``teleprompt_assets_tests/test_program_matrix.py`` runs every pair on a 48-trace window
with tiny budgets; this runs the same pairs as a user would first try them: 250 traces over 5 days
and budgets near DSPy's defaults, plus a fifth shape whose traces never log the first step's output. Each cell compiles, passes the blocking prompt check, is scored
against the uncompiled program on the holdout, is registered into a fresh sqlite MLflow store,
loaded back with ``mlflow.dspy.load_model`` and called once. A failing cell prints its reason and
the run goes on. Scores are offline-LM scores: they show the pipeline works end to end, not which
optimizer a hosted LM would favour.

Run: `.venv/bin/python benchmarks/program_matrix.py [--traces 250] [--days 5]`.
Last line: `program_matrix: <ok>/<cells> cells passed in <s> s`.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from teleprompt_assets.core.settings import load_settings
from teleprompt_assets.core.spec import load_project
from teleprompt_assets.core.tracking import connect, experiment_id
from teleprompt_assets_tests.conftest import set_env
from teleprompt_assets_tests.test_program_matrix import MODULE, SHAPES, Shape, cell_name, project_yaml, run_cell
from teleprompt_assets_tests.user_programs import traffic

logging.disable(logging.WARNING)

# Beyond the suite's shapes: the two steps returning only the reply, so traces never log the intent.
# Bootstrapping optimizers produce it; LabeledFewShot and KNNFewShot have nothing to show and say so.
ALL_SHAPES = (*SHAPES, Shape("two_step_final_only", f"{MODULE}:TriageAndDraftFinalOnly", ("email", "customer_name"),
                             {"kind": "token_f1", "field": "reply"}, logs_intent=False))

OPTIMIZERS: dict[str, dict[str, Any]] = {
    "LabeledFewShot": {"k": 8},
    "BootstrapFewShot": {"max_bootstrapped_demos": 4, "max_labeled_demos": 8},
    "BootstrapFewShotWithRandomSearch": {"max_bootstrapped_demos": 4, "max_labeled_demos": 8, "num_candidate_programs": 4, "num_threads": 1},
    "COPRO": {"breadth": 3, "depth": 2},
    "MIPROv2": {"auto": "light", "max_bootstrapped_demos": 4, "max_labeled_demos": 4, "num_threads": 1},
    "GEPA": {"max_metric_calls": 150, "num_threads": 1},
    "KNNFewShot": {"k": 4},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=250)
    parser.add_argument("--days", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tp-matrix-"))
    set_env(work / "tp")
    config = work / "teleprompt.yaml"
    config.write_text(yaml.safe_dump(project_yaml(ALL_SHAPES, OPTIMIZERS)))
    specs = load_project(config)[1]
    settings = load_settings()
    client = connect(settings)
    exp_id = experiment_id(client, settings, "teleprompt-pipeline")
    window = f"{args.traces} traces over {args.days} days"
    print(f"| shape | optimizer | result | demos | pool | baseline | candidate | seconds |  ({window}, offline LM, pid {os.getpid()})")
    print("|---|---|---|---|---|---|---|---|")
    passed, started = 0, time.perf_counter()
    for shape in ALL_SHAPES:
        for name in OPTIMIZERS:
            spec = specs[cell_name(shape.name, name)]
            curated = traffic.curated(spec.name, shape.inputs, args.traces, args.days, log_intent=shape.logs_intent)
            cell_started = time.perf_counter()
            try:
                cell = run_cell(spec, curated, client, exp_id, "2026-01-01..2026-01-05")
            except Exception as exc:  # the table reports every cell, failed ones with their reason
                reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:160]
                print(f"| {shape.name} | {name} | FAIL {reason} | | | | | {time.perf_counter() - cell_started:.1f} |")
                continue
            passed += 1
            c = cell.comparison
            print(f"| {shape.name} | {name} | ok (v{cell.version}) | {cell.demos} | {cell.pool} | {c.baseline_mean:.3f} | {c.candidate_mean:.3f} | {cell.seconds:.1f} |")
    total = len(ALL_SHAPES) * len(OPTIMIZERS)
    print(f"program_matrix: {passed}/{total} cells passed in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
