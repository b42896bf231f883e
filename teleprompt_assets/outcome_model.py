"""An outcome model: predicts the outcome a new output would earn, for programs without ground truth.

Trained on the (inputs, output, outcome) of the window's train split only, never the holdout, so
scoring the holdout with it is an honest estimate. Features are generic properties of the output
text, not the rule that generated the data:
- bias; whether the output repeats one of the input values verbatim (a name, a company);
- whether it asks a question; whether it is short (≤ 40 words) or long (> 60 words);
- the share of its words that also appear in the inputs.
A logistic regression (L2, fixed Newton steps, so training is deterministic) maps them to a
probability, which is the per-example score in [0, 1]. Its calibration on the dev split (Brier
score, mean predicted vs observed) is reported with every evaluation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

FEATURES = ("bias", "repeats_input_value", "asks_question", "short", "long", "input_word_share")
L2 = 1.0
NEWTON_STEPS = 25
_WORD = re.compile(r"[a-z0-9]+")


def features(inputs: Mapping[str, str], output: str) -> list[float]:
    words = _WORD.findall(output.lower())
    input_words = set(_WORD.findall(" ".join(str(v) for v in inputs.values()).lower()))
    values = [str(v).strip() for v in inputs.values() if 3 <= len(str(v).strip()) <= 80]
    return [
        1.0,
        float(any(v in output for v in values)),
        float("?" in output),
        float(len(words) <= 40),
        float(len(words) > 60),
        sum(w in input_words for w in words) / len(words) if words else 0.0,
    ]


def outcome_value(value: object) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and 0 <= value <= 1:
        return float(value)
    return None


@dataclass(frozen=True)
class OutcomeModel:
    outcome: str
    weights: tuple[float, ...]
    trained_on: int
    positive_rate: float

    def predict(self, inputs: Mapping[str, str], output: str) -> float:
        z = float(np.dot(self.weights, features(inputs, output)))
        return float(1 / (1 + np.exp(-np.clip(z, -30, 30))))

    def describe(self) -> dict:
        return asdict(self) | {"features": list(FEATURES)}


def train(rows: Sequence[tuple[Mapping[str, str], str, float]], outcome: str) -> OutcomeModel:
    """Fit on (inputs, output, outcome in [0, 1]) rows; soft targets are allowed."""
    if not rows:
        return OutcomeModel(outcome, tuple(0.0 for _ in FEATURES), 0, 0.0)
    x = np.array([features(i, o) for i, o, _ in rows])
    y = np.array([t for _, _, t in rows])
    w = np.zeros(x.shape[1])
    penalty = L2 * np.eye(x.shape[1])
    penalty[0, 0] = 0.0
    for _ in range(NEWTON_STEPS):
        p = 1 / (1 + np.exp(-np.clip(x @ w, -30, 30)))
        gradient = x.T @ (p - y) + penalty @ w
        hessian = x.T @ (x * (p * (1 - p))[:, None]) + penalty + 1e-9 * np.eye(x.shape[1])
        w = w - np.linalg.solve(hessian, gradient)
    return OutcomeModel(outcome, tuple(round(float(v), 12) for v in w), len(rows), float(y.mean()))


def calibration(model: OutcomeModel, rows: Sequence[tuple[Mapping[str, str], str, float]]) -> dict:
    if not rows:
        return {"n": 0}
    predicted = np.array([model.predict(i, o) for i, o, _ in rows])
    observed = np.array([t for _, _, t in rows])
    return {"n": len(rows), "brier": float(np.mean((predicted - observed) ** 2)), "mean_predicted": float(predicted.mean()),
            "mean_observed": float(observed.mean()), "brier_of_constant": float(np.mean((model.positive_rate - observed) ** 2))}
