"""The metric a program is optimized and evaluated with, for one training window.

Ground-truth metrics (exact match, token F1, a user function) are fixed; an outcome model is
trained on the window's train split and calibrated on its dev split. Either way the description
returned here is recorded in the evaluation report, so an attestation says what was measured.

The built-in metrics also carry ``feedback(example, prediction) -> str``: what GEPA's reflection LM
reads about an answer (the expected value against the one given; for an outcome model, the
predicted outcome and the features the model rewards). The score is unchanged by it. A user's function
metric gives feedback by returning ``dspy.Prediction(score=..., feedback=...)``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import dspy
import polars as pl

from teleprompt_assets.core.outcomes import probability
from teleprompt_assets.core.spec import Metric, ProgramSpec
from teleprompt_assets.training import outcome_model

MAX_NAMED = 6  # features named in an outcome model's feedback, each way


def outcome_fields(spec: ProgramSpec) -> tuple[str, ...]:
    """What an outcome model reads: ``metric.fields``, else every output (a wrong first step is part of the answer)."""
    return tuple(spec.config.metric.fields or spec.output_fields)


def step_inputs(spec: ProgramSpec) -> dict[str, tuple[str, ...]]:
    """For each output, the program inputs the step that writes it reads (all of them for an output no
    step declares), so the outcome model judges ``intent`` against the email alone."""
    reads: dict[str, tuple[str, ...]] = {}
    for predictor in spec.build().predictors():
        seen = tuple(f for f in spec.input_fields if f in predictor.signature.input_fields)
        for name in predictor.signature.output_fields:
            reads.setdefault(name, seen or spec.input_fields)
    return reads


def _rows(table: pl.DataFrame, spec: ProgramSpec, split: str) -> list[outcome_model.Row]:
    name, fields = spec.config.metric.outcome, outcome_fields(spec)
    rows = []
    for row in table.filter(pl.col("split") == split).iter_rows(named=True):
        target = probability(json.loads(row["feedback"]).get(name))
        if target is not None:
            inputs, outputs = json.loads(row["inputs"]), json.loads(row["outputs"])
            rows.append(({f: inputs.get(f) for f in spec.input_fields}, {f: outputs.get(f) for f in fields}, target))
    return rows


def window_metric(spec: ProgramSpec, table: pl.DataFrame) -> tuple[Metric, dict[str, Any]]:
    config = spec.config.metric
    if config.kind != "outcome_model":
        metric = spec.metric()
        if config.kind != "function":  # a user's function is theirs: nothing is attached to it
            metric.feedback = _expected_feedback(metric, config.field or spec.output_fields[0])  # type: ignore[attr-defined]
        return metric, {"kind": config.kind, "field": config.field, "function": config.function, "ground_truth": "expectations"}
    fields = outcome_fields(spec)
    model = outcome_model.train(_rows(table, spec, "train"), config.outcome or "", spec.input_fields, fields, step_inputs(spec))
    field = config.field or spec.output_fields[0]

    def predicted_outcome(example: dspy.Example, prediction: Any, trace: Any = None) -> float:
        return model.predict({f: example.get(f) for f in spec.input_fields}, {f: getattr(prediction, f, None) for f in fields})

    predicted_outcome.__name__ = f"outcome_model_{config.outcome}"
    predicted_outcome.feedback = _outcome_feedback(predicted_outcome, model)  # type: ignore[attr-defined]
    return predicted_outcome, {"kind": "outcome_model", "field": field, "fields": list(fields), "model": model.describe(),
                               "calibration_dev": outcome_model.calibration(model, _rows(table, spec, "dev"))}


def _expected_feedback(metric: Metric, field: str) -> Callable[[dspy.Example, Any], str]:
    def feedback(example: dspy.Example, prediction: Any) -> str:
        given = getattr(prediction, field, "")
        return f"Score {metric(example, prediction, None):.2f}. Expected {field}: {example.get(field)!r}; the answer gave: {given!r}."

    return feedback


def _outcome_feedback(metric: Metric, model: outcome_model.OutcomeModel) -> Callable[[dspy.Example, Any], str]:
    """No ground truth to compare with: say what the outcome model predicts and which features of the
    answer it learned to reward or penalize (strongest first), so a reflection LM knows what to change."""
    weighted = sorted(((w, f) for f, w in zip(model.feature_names, model.weights) if f != "bias" and abs(w) > 1e-6), key=lambda p: (-abs(p[0]), p[1]))
    rewarded = [f for w, f in weighted if w > 0][:MAX_NAMED]
    penalized = [f for w, f in weighted if w < 0][:MAX_NAMED]
    answer = " and ".join(f.name for f in model.fields)

    def feedback(example: dspy.Example, prediction: Any) -> str:
        return (f"Predicted {model.outcome} for this {answer}: {metric(example, prediction, None):.2f} (1 is best). "
                f"Learned from {model.trained_on} outcomes: rewards {', '.join(rewarded) or 'nothing'}; penalizes {', '.join(penalized) or 'nothing'}.")

    return feedback
