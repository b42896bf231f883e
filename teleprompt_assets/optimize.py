"""Recompiling a program with a DSPy teleprompter, and recording which traces shaped it.

The compiled program's demos keep the ``trace_id`` of the example they came from (labeled demos
carry it directly; bootstrapped demos are matched back to their training example by inputs), so
attribution and the attestation's dataRoot can credit exactly the traces that were used.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from typing import Any

import dspy

from teleprompt_assets.programs import Metric, OptimizerConfig, ProgramSpec

OPTIMIZERS: dict[str, type] = {
    "LabeledFewShot": dspy.LabeledFewShot,
    "BootstrapFewShot": dspy.BootstrapFewShot,
    "BootstrapFewShotWithRandomSearch": dspy.BootstrapFewShotWithRandomSearch,
}
_USES_METRIC = {"BootstrapFewShot", "BootstrapFewShotWithRandomSearch"}


def validate_optimizer(config: OptimizerConfig) -> None:
    """Fail before a run starts when the optimizer or one of its parameters is unknown."""
    cls = OPTIMIZERS.get(config.name)
    if cls is None:
        raise ValueError(f"name: unknown optimizer '{config.name}' (choose from {', '.join(OPTIMIZERS)})")
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "metric"}
    for key, value in config.params.items():
        if key not in accepted:
            raise ValueError(f"params.{key}: not a parameter of {config.name} (accepted: {', '.join(sorted(accepted))})")
        if key.startswith(("max_", "num_")) and not (isinstance(value, int) and value >= 0):
            raise ValueError(f"params.{key}: must be a non-negative integer, got {value!r}")


@dataclass(frozen=True)
class DemoSource:
    predictor: str
    trace_id: str | None
    augmented: bool


@dataclass(frozen=True)
class CompileResult:
    program: dspy.Module
    state: dict[str, Any]
    demos: list[DemoSource]


def program_state(program: dspy.Module) -> dict[str, Any]:
    """The JSON state ``program.save(path.json)`` would write (demos and instructions, no pickle)."""
    state = program.dump_state()
    return json.loads(json.dumps(state, sort_keys=True, default=str))


def load_state(spec: ProgramSpec, state: dict[str, Any]) -> dspy.Module:
    program = spec.build()
    program.load_state(state)
    return program


def compile_program(
    spec: ProgramSpec,
    trainset: list[dspy.Example],
    metric: Metric,
    student: dspy.Module | None = None,
) -> CompileResult:
    config = spec.config.optimizer
    cls = OPTIMIZERS[config.name]
    params = dict(config.params)
    if config.name in _USES_METRIC:
        params["metric"] = metric
    optimizer = cls(**params)
    student = student or spec.build()
    if len(trainset) == 0:
        compiled = student.reset_copy()
    else:
        compiled = optimizer.compile(student, trainset=trainset)
    return CompileResult(compiled, program_state(compiled), demo_sources(compiled, trainset, spec.input_fields))


def demo_sources(program: dspy.Module, trainset: list[dspy.Example], input_fields: tuple[str, ...]) -> list[DemoSource]:
    by_inputs = {tuple(str(ex.get(f)) for f in input_fields): ex.get("trace_id") for ex in trainset}
    sources = []
    for name, predictor in program.named_predictors():
        for demo in predictor.demos:
            trace_id = demo.get("trace_id") or by_inputs.get(tuple(str(demo.get(f)) for f in input_fields))
            sources.append(DemoSource(name, trace_id, bool(demo.get("augmented", False))))
    return sources
