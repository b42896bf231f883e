"""The metric a program is optimized and evaluated with, for one training window.

Ground-truth metrics (exact match, token F1, a user function) are fixed; an outcome model is
trained on the window's train split and calibrated on its dev split. Either way the description
returned here is recorded in the evaluation report, so an attestation says what was measured.

The built-in metrics also carry ``feedback(example, prediction) -> str``: what GEPA's reflection LM
reads about an answer (the expected value against the one given; for an outcome model, the
predicted outcome and what the model rewards). The score is unchanged by it. A user's function
metric gives feedback by returning ``dspy.Prediction(score=..., feedback=...)``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
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
        metric = spec.metric()
        if config.kind != "function":  # a user's function is theirs: nothing is attached to it
            metric.feedback = _expected_feedback(metric, config.field or spec.output_fields[0])  # type: ignore[attr-defined]
        return metric, {"kind": config.kind, "field": config.field, "function": config.function, "ground_truth": "expectations"}
    model = outcome_model.train(_rows(table, spec, "train"), config.outcome or "")
    field = config.field or spec.output_fields[0]

    def predicted_outcome(example: dspy.Example, prediction: Any, trace: Any = None) -> float:
        return model.predict({f: str(example.get(f, "")) for f in spec.input_fields}, str(getattr(prediction, field, "") or ""))

    predicted_outcome.__name__ = f"outcome_model_{config.outcome}"
    predicted_outcome.feedback = _outcome_feedback(predicted_outcome, model, field)  # type: ignore[attr-defined]
    return predicted_outcome, {"kind": "outcome_model", "field": field, "model": model.describe(),
                               "calibration_dev": outcome_model.calibration(model, _rows(table, spec, "dev"))}


def _expected_feedback(metric: Metric, field: str) -> Callable[[dspy.Example, Any], str]:
    def feedback(example: dspy.Example, prediction: Any) -> str:
        given = getattr(prediction, field, "")
        return f"Score {metric(example, prediction, None):.2f}. Expected {field}: {example.get(field)!r}; the answer gave: {given!r}."

    return feedback


def _outcome_feedback(metric: Metric, model: outcome_model.OutcomeModel, field: str) -> Callable[[dspy.Example, Any], str]:
    """No ground truth to compare with: say what the outcome model predicts and which properties of
    the text it learned to reward or penalize, so a reflection LM knows what to change."""
    weights = dict(zip(outcome_model.FEATURES, model.weights))
    rewarded = [f for f, w in weights.items() if f != "bias" and w > 0]
    penalized = [f for f, w in weights.items() if f != "bias" and w < 0]

    def feedback(example: dspy.Example, prediction: Any) -> str:
        return (f"Predicted {model.outcome} for this {field}: {metric(example, prediction, None):.2f} (1 is best). "
                f"Learned from {model.trained_on} outcomes: rewards {', '.join(rewarded) or 'nothing'}; penalizes {', '.join(penalized) or 'nothing'}.")

    return feedback
