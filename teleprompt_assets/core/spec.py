"""The registry of optimizable programs, loaded from ``teleprompt.yaml`` (docs/architecture.md#programs).

Users register their own DSPy programs here without editing this package; the sample programs are
registered the same way, so the shipped config is the user's template. A bad entry fails at load
with a message naming the entry and the field, never later inside a run.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

import dspy
import yaml
from pydantic import ValidationError

from teleprompt_assets.core.config import ConfigError, MetricConfig, ProgramConfig, ProjectConfig, start_date_problem
from teleprompt_assets.core.optimizers import validate_optimizer

Metric = Callable[[dspy.Example, Any, Any], float]
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def model_name(program: str) -> str:
    """The registered model of a program (docs/architecture.md#model-registry)."""
    return f"teleprompt-{program}"


@dataclass(frozen=True)
class ProgramSpec:
    """A validated program entry with its class, fields and metric resolved."""

    name: str
    config: ProgramConfig

    @cached_property
    def module_class(self) -> type[dspy.Module]:
        return import_object(self.config.module)

    def build(self) -> dspy.Module:
        return self.module_class()

    @cached_property
    def input_fields(self) -> tuple[str, ...]:
        return forward_inputs(self.module_class)

    @cached_property
    def output_fields(self) -> tuple[str, ...]:
        names: list[str] = []
        for predictor in self.build().predictors():
            names += [n for n in predictor.signature.output_fields if n != "reasoning" and n not in names]
        return tuple(names)

    @cached_property
    def computed_fields(self) -> tuple[str, ...]:
        """Fields a predictor reads that are neither program inputs nor program outputs: values the
        program computes in ``forward`` (retrieved passages, an earlier step's output). A trace holds
        them only where ``forward`` returns them, and demos need them."""
        names: list[str] = []
        for predictor in self.build().predictors():
            names += [n for n in predictor.signature.input_fields if n not in self.input_fields and n not in self.output_fields and n not in names]
        return tuple(names)

    @property
    def registered_model_name(self) -> str:
        return model_name(self.name)

    def metric(self) -> Metric:
        return build_metric(self.config.metric)


def forward_inputs(module_class: type[dspy.Module]) -> tuple[str, ...]:
    """The named parameters of the class's ``forward``: the program's input fields."""
    params = inspect.signature(module_class.forward).parameters
    return tuple(p for p in params if p != "self" and params[p].kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL))


def import_object(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ImportError(f"'{path}' is not of the form package.module:Name")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _normalize(value: Any) -> str:
    return " ".join(str(value).strip().lower().split())


def exact_match(field: str) -> Metric:
    def metric(example: dspy.Example, prediction: Any, trace: Any = None) -> float:
        return float(_normalize(example[field]) == _normalize(getattr(prediction, field, "")))

    metric.__name__ = f"exact_match_{field}"
    return metric


def token_f1(field: str) -> Metric:
    def metric(example: dspy.Example, prediction: Any, trace: Any = None) -> float:
        gold, pred = _normalize(example[field]).split(), _normalize(getattr(prediction, field, "")).split()
        common = sum(min(gold.count(w), pred.count(w)) for w in set(gold))
        if not gold or not pred or not common:
            return float(gold == pred)
        precision, recall = common / len(pred), common / len(gold)
        return 2 * precision * recall / (precision + recall)

    metric.__name__ = f"token_f1_{field}"
    return metric


def build_metric(config: MetricConfig) -> Metric:
    """Fixed metrics; an outcome model is trained per window (see :mod:`teleprompt_assets.training.metrics`)."""
    if config.kind == "outcome_model":
        raise ValueError("an outcome_model metric is trained per window: use metrics.window_metric")
    if config.kind == "function":
        return import_object(config.function or "")
    factory = exact_match if config.kind == "exact_match" else token_f1
    return factory(config.field or "")


def _validate_entry(name: str, config: ProgramConfig) -> ProgramSpec:
    where = f"programs.{name}"
    if not _NAME.match(name):
        raise ConfigError(f"{where}: name must match {_NAME.pattern} (it becomes a partition key and a model name)")
    spec = ProgramSpec(name, config)
    try:
        cls = spec.module_class
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{where}.module: cannot import '{config.module}': {exc}") from exc
    if not (inspect.isclass(cls) and issubclass(cls, dspy.Module)):
        raise ConfigError(f"{where}.module: '{config.module}' is not a dspy.Module subclass")
    metric = config.metric
    if metric.kind == "function":
        try:
            if not callable(import_object(metric.function or "")):
                raise ConfigError(f"{where}.metric.function: '{metric.function}' is not callable")
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"{where}.metric.function: cannot import '{metric.function}': {exc}") from exc
    elif metric.kind == "outcome_model" and not metric.outcome:
        raise ConfigError(f"{where}.metric.outcome: outcome_model needs the feedback name to predict")
    elif metric.field not in spec.output_fields:
        raise ConfigError(f"{where}.metric.field: '{metric.field}' is not an output of {config.module} (outputs: {', '.join(spec.output_fields)})")
    if metric.fields is not None and metric.kind != "outcome_model":
        raise ConfigError(f"{where}.metric.fields: only an outcome_model reads several fields ({metric.kind} scores metric.field)")
    if metric.fields == []:
        raise ConfigError(f"{where}.metric.fields: names no output (leave it out to read all of them)")
    for name in metric.fields or ():
        if name not in spec.output_fields:
            raise ConfigError(f"{where}.metric.fields: '{name}' is not an output of {config.module} (outputs: {', '.join(spec.output_fields)})")
    if metric.report_by is not None and metric.report_by not in spec.input_fields + spec.output_fields:
        raise ConfigError(f"{where}.metric.report_by: '{metric.report_by}' is not an input or output of {config.module} "
                          f"(fields: {', '.join(spec.input_fields + spec.output_fields)})")
    try:
        validate_optimizer(config.optimizer)
    except ValueError as exc:
        raise ConfigError(f"{where}.optimizer: {exc}") from exc
    return spec


START_ENV = "TELEPROMPT_START_DATE"
START_ANCHOR = "partitions_start"


def start_override(value: str, home: Path, window_days: int, today: date | None = None) -> date:
    """``TELEPROMPT_START_DATE``: a date, or ``auto``. ``auto`` is the first day of the window that ends
    yesterday, fixed the first time it is asked in this ``TELEPROMPT_HOME`` (a file there), so the
    demo's partitions start where its data starts and every process agrees on it, today and later."""
    if value != "auto":
        try:
            day = date.fromisoformat(value)
        except ValueError:
            raise ConfigError(f"{START_ENV}={value!r}: use a day (YYYY-MM-DD) or auto") from None
        if problem := start_date_problem(day):
            raise ConfigError(f"{START_ENV}={value!r}: {problem}")
        return day
    anchor = home / START_ANCHOR
    if anchor.exists():
        return date.fromisoformat(anchor.read_text().strip())
    start = (today or datetime.now(UTC).date()) - timedelta(days=window_days)
    home.mkdir(parents=True, exist_ok=True)
    staging = anchor.with_suffix(f".{os.getpid()}")
    staging.write_text(start.isoformat())
    try:
        os.link(staging, anchor)  # the first writer wins; a racing process reads what it wrote
    except FileExistsError:
        pass
    finally:
        staging.unlink()
    return date.fromisoformat(anchor.read_text().strip())


def load_project(path: Path | str) -> tuple[ProjectConfig, dict[str, ProgramSpec]]:
    """Parse and validate the config file; raises :class:`ConfigError` naming the bad entry.
    ``TELEPROMPT_START_DATE`` overrides ``start_date`` (:func:`start_override`)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} not found (set TELEPROMPT_CONFIG)") from exc
    try:
        project = ProjectConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: {where}: {first['msg']}") from exc
    if override := os.environ.get(START_ENV, "").strip():
        from teleprompt_assets.core.settings import load_settings

        project = project.model_copy(update={"start_date": start_override(override, load_settings().home, project.window_days)})
    return project, {name: _validate_entry(name, cfg) for name, cfg in project.programs.items()}
