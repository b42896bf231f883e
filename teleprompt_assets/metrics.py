"""The metric a program is optimized and evaluated with, for one training window.

Ground-truth metrics (exact match, token F1, a user function) are fixed; an outcome model is
trained on the window's train split and calibrated on its dev split. Either way the description
returned here is recorded in the evaluation report, so an attestation says what was measured.
"""

from __future__ import annotations

import json
from typing import Any

import dspy
import polars as pl

from teleprompt_assets import outcome_model
from teleprompt_assets.programs import Metric, ProgramSpec


def _rows(table: pl.DataFrame, spec: ProgramSpec, split: str) -> list[tuple[dict, str, float]]:
    name, field = spec.config.metric.outcome, spec.config.metric.field or spec.output_fields[0]
    rows = []
    for row in table.filter(pl.col("split") == split).iter_rows(named=True):
        target = outcome_model.outcome_value(json.loads(row["feedback"]).get(name))
        if target is not None:
            inputs = json.loads(row["inputs"])
            rows.append(({f: str(inputs.get(f, "")) for f in spec.input_fields}, str(json.loads(row["outputs"]).get(field, "")), target))
    return rows


def window_metric(spec: ProgramSpec, table: pl.DataFrame) -> tuple[Metric, dict[str, Any]]:
    config = spec.config.metric
    if config.kind != "outcome_model":
        return spec.metric(), {"kind": config.kind, "field": config.field, "function": config.function, "ground_truth": "expectations"}
    model = outcome_model.train(_rows(table, spec, "train"), config.outcome or "")
    field = config.field or spec.output_fields[0]

    def predicted_outcome(example: dspy.Example, prediction: Any, trace: Any = None) -> float:
        return model.predict({f: str(example.get(f, "")) for f in spec.input_fields}, str(getattr(prediction, field, "") or ""))

    predicted_outcome.__name__ = f"outcome_model_{config.outcome}"
    return predicted_outcome, {"kind": "outcome_model", "field": field, "model": model.describe(),
                               "calibration_dev": outcome_model.calibration(model, _rows(table, spec, "dev"))}
