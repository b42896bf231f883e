"""Recompiling a program with a DSPy teleprompter, and recording which traces shaped it.

The compiled program's demos keep the ``trace_id`` of the example they came from (labeled demos
carry it directly; bootstrapped demos are matched back to their training example by inputs), so
attribution and the attestation's dataRoot can credit exactly the traces that were used.

``KNNFewShot`` has no fixed demos: it picks them per call from a candidate pool of training examples
(see :mod:`teleprompt_assets.knn`). Its compiled program's state records that pool, each entry with
its ``trace_id``, and :attr:`CompileResult.pool` lists them; :attr:`CompileResult.demos` is empty.
"""

from __future__ import annotations

import inspect
import json
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import dspy
from dspy.utils import exceptions as dspy_errors

from teleprompt_assets import knn
from teleprompt_assets.programs import Metric, OptimizerConfig, ProgramSpec

OPTIMIZERS: dict[str, type] = {
    "LabeledFewShot": dspy.LabeledFewShot,
    "BootstrapFewShot": dspy.BootstrapFewShot,
    "BootstrapFewShotWithRandomSearch": dspy.BootstrapFewShotWithRandomSearch,
    "COPRO": dspy.COPRO,
    "MIPROv2": dspy.MIPROv2,
    "GEPA": dspy.GEPA,
    knn.NAME: knn.KNNFewShot,  # DSPy's algorithm, with a pool that survives save/load (see teleprompt_assets.knn)
}
_USES_METRIC = {"BootstrapFewShot", "BootstrapFewShotWithRandomSearch", "COPRO", "MIPROv2", "GEPA"}
_USES_VALSET = {"BootstrapFewShotWithRandomSearch", "MIPROv2", "GEPA"}
_NEEDS_REFLECTION_LM = {"GEPA"}
MAX_THREADS = 64


def validate_optimizer(config: OptimizerConfig) -> None:
    """Fail before a run starts when the optimizer or one of its parameters is unknown or out of range."""
    cls = OPTIMIZERS.get(config.name)
    if cls is None:
        raise ValueError(f"name: unknown optimizer '{config.name}' (choose from {', '.join(OPTIMIZERS)})")
    if cls is knn.KNNFewShot:
        knn.KNNParams.parse(config.params)
        if config.warm_start:
            raise ValueError(f"warm_start: {knn.NAME} shows labeled training examples and runs no teacher; set warm_start: false")
        return
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "metric", "args", "kwargs", "_kwargs"}
    for key, value in config.params.items():
        if key not in accepted:
            raise ValueError(f"params.{key}: not a parameter of {config.name} (accepted: {', '.join(sorted(accepted))})")
        if key.startswith(("max_", "num_")) and not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            raise ValueError(f"params.{key}: must be a non-negative integer, got {value!r}")
    if config.params.get("num_threads", 1) > MAX_THREADS:
        raise ValueError(f"params.num_threads: at most {MAX_THREADS}")
    if config.name == "COPRO" and config.params.get("breadth", 10) <= 1:
        raise ValueError("params.breadth: COPRO needs breadth > 1")
    if config.name == "MIPROv2":
        import importlib.util

        if importlib.util.find_spec("optuna") is None:
            raise ValueError("name: MIPROv2 needs the optuna package")
    if config.name in _NEEDS_REFLECTION_LM and not config.reflection_lm:
        raise ValueError(f"reflection_lm: {config.name} needs a reflection LM (a LiteLLM model string)")


class CompileTimeout(TimeoutError):
    """The whole compile ran past its configured limit; nothing downstream ran."""


class CompileError(RuntimeError):
    """The optimizer could not compile the program; ``transient`` says whether retrying may help."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


# LM failures that may pass by themselves (provider down, slow, rate limited): worth a retry of
# the step. Everything else (unparseable answers, auth, bad requests, a blown time limit) is not.
TRANSIENT_LM_ERRORS: tuple[type[BaseException], ...] = (
    dspy_errors.LMTransportError, dspy_errors.LMTimeoutError, dspy_errors.LMServerError,
    dspy_errors.LMRateLimitError, dspy_errors.LMLockTimeoutError,
)
REARM_S = 0.05
MAX_MESSAGE = 600


def is_transient(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, TRANSIENT_LM_ERRORS):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Interrupt the block after ``seconds`` (main thread only: elsewhere the limit cannot be enforced).

    Optimizers catch exceptions per example and carry on (DSPy's BootstrapFewShot counts them up to
    ``max_errors``), so a single interrupt could be swallowed and the next blocking LM call would
    hang unbounded. After expiry the alarm therefore re-fires every ``REARM_S`` until the block
    ends, and the block ends in :class:`CompileTimeout` whatever it raised or returned.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    armed, expired = [True], [False]
    message = f"compile exceeded its time limit of {seconds} s"

    def expire(signum: int, frame: Any) -> None:
        if armed[0]:
            expired[0] = True
            raise CompileTimeout(message)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds, REARM_S)
    try:
        yield
    except BaseException as exc:
        if expired[0] and not isinstance(exc, CompileTimeout):
            raise CompileTimeout(message) from exc
        raise
    finally:
        while True:  # an alarm landing during the disarm would skip the rest: repeat until done
            try:
                armed[0] = False
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
                break
            except CompileTimeout:
                continue
    if expired[0]:
        raise CompileTimeout(message)


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
    pool: list[str | None] = field(default_factory=list)  # KNNFewShot: trace ids its calls draw demos from


def program_state(program: dspy.Module) -> dict[str, Any]:
    """The JSON state ``program.save(path.json)`` would write (demos and instructions, no pickle)."""
    state = program.dump_state()
    return json.loads(json.dumps(state, sort_keys=True, default=str))


def load_state(spec: ProgramSpec, state: dict[str, Any]) -> dspy.Module:
    """The program a state describes: a KNNFewShot state (it has a pool) rebuilds the KNN program."""
    program = knn.KNNProgram(spec.build()) if knn.is_knn_state(state) else spec.build()
    program.load_state(state)
    return program


def compile_program(
    spec: ProgramSpec,
    trainset: list[dspy.Example],
    metric: Metric,
    valset: list[dspy.Example] | None = None,
    teacher: dspy.Module | None = None,
) -> CompileResult:
    """Compile ``spec``'s program on ``trainset``; ``teacher`` (e.g. the champion) warm-starts it.

    Every demo leaves with the ``trace_id`` it came from, so provenance survives into the program's
    JSON state and the checks downstream can prove where each demo was drawn from.
    """
    config = spec.config.optimizer
    student = spec.build()
    if not trainset:
        compiled = student.reset_copy()
        return CompileResult(compiled, program_state(compiled), [])
    optimizer = _build(config, metric)
    kwargs: dict[str, Any] = {"trainset": trainset}
    if config.name in _USES_VALSET and valset:
        kwargs["valset"] = valset
    if teacher is not None and "teacher" in inspect.signature(optimizer.compile).parameters:
        teacher = teacher.deepcopy()
        teacher._compiled = True  # keep its demos: DSPy would otherwise replace them with labeled ones
        kwargs["teacher"] = teacher
    try:
        compiled = optimizer.compile(student, **kwargs)
    except CompileTimeout:
        raise
    except Exception as exc:
        lm = getattr(dspy.settings, "lm", None)
        detail = f"{type(exc).__name__}: {exc}"
        if len(detail) > MAX_MESSAGE:
            detail = detail[:MAX_MESSAGE] + "…"
        transient = is_transient(exc)
        raise CompileError(
            f"{config.name} could not compile '{spec.name}' with LM {getattr(lm, 'model', None)!r}: {detail}"
            + (" (transient LM failure)" if transient else ""), transient,
        ) from exc
    _stamp_sources(compiled, trainset, spec.input_fields)
    return CompileResult(compiled, program_state(compiled), demo_sources(compiled), knn.pool_trace_ids(compiled))


def _build(config: OptimizerConfig, metric: Metric) -> Any:
    params = dict(config.params)
    if config.name in _USES_METRIC:
        params["metric"] = metric
    if config.name in _NEEDS_REFLECTION_LM:
        from teleprompt_assets.lm import build_lm

        params["reflection_lm"] = build_lm(config.reflection_lm)
    return OPTIMIZERS[config.name](**params)


def _stamp_sources(program: dspy.Module, trainset: list[dspy.Example], input_fields: tuple[str, ...]) -> None:
    """Bootstrapped demos are rebuilt from traces and lose their example's fields; match them back."""
    by_inputs = {tuple(str(ex.get(f)) for f in input_fields): ex for ex in trainset}
    for predictor in program.predictors():
        stamped = []
        for demo in predictor.demos:
            source = by_inputs.get(tuple(str(demo.get(f)) for f in input_fields))
            if demo.get("trace_id") is None and source is not None:
                demo = demo.copy(trace_id=source.trace_id, trace_hash=source.get("trace_hash"), contributor=source.get("contributor"))
            stamped.append(demo)
        predictor.demos = stamped


def demo_sources(program: dspy.Module) -> list[DemoSource]:
    return [
        DemoSource(name, demo.get("trace_id"), bool(demo.get("augmented", False)))
        for name, predictor in program.named_predictors()
        for demo in predictor.demos
    ]
