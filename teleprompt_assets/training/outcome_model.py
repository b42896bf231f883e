"""An outcome model: predicts the outcome a new answer would earn, for programs without ground truth.

Trained on the (inputs, outputs, outcome) of the window's train split only, never the holdout, so
scoring the holdout with it is an honest estimate. It reads every output field it is given (by
default all of the program's outputs): a two-step program that classifies and then drafts succeeds
or fails on both steps, and a model that read only the draft could not see a wrong classification.

Each field is read according to what it holds on the train split (:func:`categories`):
- categorical (at most ``MAX_CATEGORIES`` distinct values, at most half of them seen once): one-hot
  ``field=value`` (a value never seen scores as none of them), and ``field:fits_inputs``, the
  probability of the value given the input words under a naive Bayes model counted over the train
  traces weighted by their outcome, i.e. how typical this value is, for inputs like these, among
  answers that worked. One-hot alone only says which classes tend to succeed; ``fits_inputs`` is what
  sees "this email was classified as the wrong intent". A train trace's own counts are left out
  when its feature is computed, so training sees the feature as the holdout will.
- text: ``field:repeats_<input>`` for each input (the output repeats that input's value verbatim, at
  least 3 characters: naming the customer is not echoing the email, and a single "repeats an input
  value" flag rewarded echoes), ``field:asks_question``, ``field:short`` (≤ 40 words),
  ``field:long`` (> 60 words), ``field:input_word_share`` (the share of its words found in the
  inputs). Generic on purpose: they are properties of any text, not the rule behind the data.
- absent (no train trace logs it): no features.
A logistic regression (L2, bias unpenalized, fixed Newton steps, so training is deterministic) maps
the features to a probability, which is the per-example score in [0, 1]. Its calibration on the dev
split (Brier score, mean predicted vs observed) is reported with every evaluation.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

MAX_CATEGORIES = 12
L2 = 1.0
NEWTON_STEPS = 25
SHORT_WORDS, LONG_WORDS = 40, 60
MIN_REPEAT_CHARS = 3
TEXT_FEATURES = ("asks_question", "short", "long", "input_word_share")
_WORD = re.compile(r"[a-z0-9]+")

Row = tuple[Mapping[str, object], Mapping[str, object], float]


def normalized(value: object) -> str:
    """One spelling per value: ``None`` is missing, whitespace runs are one space (0 and False are answers)."""
    return "" if value is None else " ".join(str(value).split())


def categories(values: Iterable[object]) -> tuple[str, ...] | None:
    """The distinct values, when a field reads as categorical; None when it is free text.

    Categorical: at most ``MAX_CATEGORIES`` distinct non-empty values, and at most half of them seen
    only once. Free text that repeats one stock answer ("we will get back to you") beside a handful
    of unique ones is still free text. The A/B report and the outcome model share this rule.
    """
    counts = Counter(v for v in (normalized(x) for x in values) if v)
    once = sum(c == 1 for c in counts.values())
    if not counts or len(counts) > MAX_CATEGORIES or 2 * once > len(counts):
        return None
    return tuple(sorted(counts))


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _input_words(inputs: Sequence[str], values: Mapping[str, object]) -> list[str]:
    return _words(" ".join(normalized(values.get(f)) for f in inputs))


def text_feature_names(name: str, inputs: Sequence[str]) -> tuple[str, ...]:
    return tuple(f"{name}:repeats_{i}" for i in inputs) + tuple(f"{name}:{f}" for f in TEXT_FEATURES)


def text_features(inputs: Sequence[str], values: Mapping[str, object], text: str) -> list[float]:
    words = _words(text)
    known = set(_input_words(inputs, values))
    repeats = [float(len(v) >= MIN_REPEAT_CHARS and v in text) for v in (normalized(values.get(f)) for f in inputs)]
    share = sum(w in known for w in words) / len(words) if words else 0.0
    return repeats + [float("?" in text), float(len(words) <= SHORT_WORDS), float(len(words) > LONG_WORDS), share]


@dataclass(frozen=True)
class Fit:
    """Multinomial naive Bayes (add-one smoothing) of a categorical value given the input words, each
    train trace counted with its outcome as weight."""

    values: tuple[str, ...]
    weight: tuple[float, ...]
    length: tuple[float, ...]
    counts: tuple[Mapping[str, float], ...]
    vocabulary: int

    @classmethod
    def count(cls, values: tuple[str, ...], rows: Sequence[tuple[list[str], str, float]]) -> Fit:
        weight = [0.0] * len(values)
        length = [0.0] * len(values)
        counts: list[dict[str, float]] = [{} for _ in values]
        for words, value, target in rows:
            if value in values and target > 0:
                j = values.index(value)
                weight[j] += target
                length[j] += target * len(words)
                for w in words:
                    counts[j][w] = counts[j].get(w, 0.0) + target
        vocabulary = len(set().union(*(c.keys() for c in counts)))
        return cls(values, tuple(weight), tuple(length), tuple(counts), vocabulary)

    def probability(self, words: Sequence[str], value: str, own: str = "", own_weight: float = 0.0) -> float:
        """P(value | words); ``own``/``own_weight`` remove a train trace's own counts (leave one out)."""
        if value not in self.values:
            return 0.0
        mine = Counter(words) if own_weight else Counter()
        total = sum(self.weight) - own_weight
        logs = []
        for j, v in enumerate(self.values):
            sub = own_weight if v == own else 0.0
            score = math.log(self.weight[j] - sub + 1) - math.log(total + len(self.values))
            denominator = math.log(self.length[j] - sub * len(words) + self.vocabulary + 1)
            for w in words:
                c = self.counts[j].get(w, 0.0) - (sub * mine[w] if sub else 0.0)
                score += math.log(c + 1) - denominator
            logs.append(score)
        top = max(logs)
        exps = [math.exp(s - top) for s in logs]
        return exps[self.values.index(value)] / sum(exps)


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: str  # "categorical", "text" or "absent": decided by ``categories`` on the train split
    reads: tuple[str, ...]  # the inputs its features look at: those of the step that writes it
    values: tuple[str, ...] = ()
    fit: Fit | None = field(default=None, repr=False)

    @property
    def feature_names(self) -> tuple[str, ...]:
        if self.kind == "categorical":
            return tuple(f"{self.name}={v}" for v in self.values) + (f"{self.name}:fits_inputs",)
        return text_feature_names(self.name, self.reads) if self.kind == "text" else ()

    def features(self, inputs: Mapping[str, object], output: object, own_weight: float = 0.0) -> list[float]:
        value = normalized(output)
        if self.kind == "categorical":
            assert self.fit is not None
            fits = self.fit.probability(_input_words(self.reads, inputs), value, value, own_weight)
            return [float(value == v) for v in self.values] + [fits]
        return text_features(self.reads, inputs, value) if self.kind == "text" else []

    def describe(self) -> dict:
        return {"kind": self.kind, "reads": list(self.reads)} | ({"values": list(self.values)} if self.kind == "categorical" else {})


@dataclass(frozen=True)
class OutcomeModel:
    outcome: str
    inputs: tuple[str, ...]
    fields: tuple[FieldSpec, ...]
    weights: tuple[float, ...]
    trained_on: int
    positive_rate: float

    @property
    def feature_names(self) -> tuple[str, ...]:
        return ("bias",) + tuple(n for f in self.fields for n in f.feature_names)

    def features(self, inputs: Mapping[str, object], outputs: Mapping[str, object], own_weight: float = 0.0) -> list[float]:
        return [1.0] + [x for f in self.fields for x in f.features(inputs, outputs.get(f.name), own_weight)]

    def predict(self, inputs: Mapping[str, object], outputs: Mapping[str, object]) -> float:
        z = float(np.dot(self.weights, self.features(inputs, outputs)))
        return float(1 / (1 + np.exp(-np.clip(z, -30, 30))))

    def describe(self) -> dict:
        return {"outcome": self.outcome, "inputs": list(self.inputs), "fields": {f.name: f.describe() for f in self.fields},
                "features": list(self.feature_names), "weights": list(self.weights), "trained_on": self.trained_on,
                "positive_rate": self.positive_rate}


def _field_spec(name: str, reads: tuple[str, ...], rows: Sequence[Row]) -> FieldSpec:
    values = [normalized(o.get(name)) for _, o, _ in rows]
    if not any(values):
        return FieldSpec(name, "absent", reads)
    kinds = categories(values)
    if kinds is None:
        return FieldSpec(name, "text", reads)
    fit = Fit.count(kinds, [(_input_words(reads, i), v, t) for (i, _, t), v in zip(rows, values)])
    return FieldSpec(name, "categorical", reads, kinds, fit)


def train(rows: Sequence[Row], outcome: str, inputs: Sequence[str], fields: Sequence[str],
          reads: Mapping[str, Sequence[str]] | None = None) -> OutcomeModel:
    """Fit on (inputs, outputs, outcome in [0, 1]) rows; soft targets are allowed. ``reads[field]``
    names the inputs the step writing ``field`` sees (default: all ``inputs``): ``classify`` never
    sees the customer's name, so the name's words must not decide whether its intent fits."""
    specs = tuple(_field_spec(name, tuple((reads or {}).get(name, inputs)), rows) for name in fields)
    model = OutcomeModel(outcome, tuple(inputs), specs, (), len(rows), float(np.mean([t for *_, t in rows])) if rows else 0.0)
    if not rows:
        return replace(model, weights=tuple(0.0 for _ in model.feature_names))
    x = np.array([model.features(i, o, own_weight=t) for i, o, t in rows])
    y = np.array([t for *_, t in rows])
    w = np.zeros(x.shape[1])
    penalty = L2 * np.eye(x.shape[1])
    penalty[0, 0] = 0.0
    for _ in range(NEWTON_STEPS):
        p = 1 / (1 + np.exp(-np.clip(x @ w, -30, 30)))
        gradient = x.T @ (p - y) + penalty @ w
        hessian = x.T @ (x * (p * (1 - p))[:, None]) + penalty + 1e-9 * np.eye(x.shape[1])
        w = w - np.linalg.solve(hessian, gradient)
    return replace(model, weights=tuple(round(float(v), 12) for v in w))


def calibration(model: OutcomeModel, rows: Sequence[Row]) -> dict:
    if not rows:
        return {"n": 0}
    predicted = np.array([model.predict(i, o) for i, o, _ in rows])
    observed = np.array([t for *_, t in rows])
    return {"n": len(rows), "brier": float(np.mean((predicted - observed) ** 2)), "mean_predicted": float(predicted.mean()),
            "mean_observed": float(observed.mean()), "brier_of_constant": float(np.mean((model.positive_rate - observed) ** 2))}
