"""Recompiling a program with a DSPy teleprompter, and recording which traces shaped it.

The compiled program's demos keep the ``trace_id`` of the training example they came from, so
attribution and the attestation's dataRoot can credit exactly the traces that were used. Labeled
demos are training examples and carry it already. A bootstrapped demo is rebuilt by DSPy from one
predictor's step of a teacher run and holds only that predictor's fields, which in a multi-step
program may be none of the program's inputs (``draft`` sees the ``intent`` that ``classify``
produced). So the provenance is recorded where the demo is made: DSPy's bootstrap runs the teacher
on one training example at a time, and every demo a run yields is stamped with that example's
``trace_id``, ``trace_hash`` and ``contributor`` (:func:`_record_bootstrap_sources`). Nothing is
matched back by content, so no demo can be credited to a trace that merely looks alike.

Demos are then made distinct per predictor, on the inputs that predictor sees: two emails that
differ only in the customer's name are two examples for the program but one for ``classify``; and a
labeled demo that lacks a field its predictor needs (traces that never log an intermediate output)
is left out. LabeledFewShot and KNNFewShot, which have nothing else to show, fail with that reason.

``KNNFewShot`` has no fixed demos: it picks them per call from a candidate pool of training examples
(see :mod:`teleprompt_assets.optimize.knn`). Its compiled program's state records that pool, each entry with
its ``trace_id``, and :attr:`CompileResult.pool` lists them; :attr:`CompileResult.demos` is empty.

GEPA calls its metric with five arguments and wants feedback text; :func:`gepa_metric` adapts the
program's metric. Its reflection LM is ``optimizer.reflection_lm`` when set, else the LM the
compile runs with (the offline LM when ``TELEPROMPT_LM`` is unset; see :mod:`teleprompt_assets.core.lm`).

Any failure while compiling is a :class:`CompileError` (or :class:`CompileTimeout`) that says
whether a retry may help: only LM failures that pass by themselves are transient.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import dspy
from dspy.teleprompt.bootstrap import BootstrapFewShot
from dspy.utils import exceptions as dspy_errors

from teleprompt_assets.core.config import OptimizerConfig
from teleprompt_assets.core.optimizers import COMPILE_PARAMS, KNN, TELEPROMPTERS
from teleprompt_assets.core.spec import Metric, ProgramSpec
from teleprompt_assets.optimize import knn

OPTIMIZERS: dict[str, type] = TELEPROMPTERS | {KNN: knn.KNNFewShot}  # KNNFewShot: DSPy's algorithm, with a pool that survives save/load
_USES_METRIC = {"BootstrapFewShot", "BootstrapFewShotWithRandomSearch", "COPRO", "MIPROv2", "GEPA"}
_USES_VALSET = {"BootstrapFewShotWithRandomSearch", "MIPROv2", "GEPA"}
_NEEDS_REFLECTION_LM = {"GEPA"}
PROVENANCE = ("trace_id", "trace_hash", "contributor")


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


TRIAL_LOGGERS = ("dspy", "optuna")


class _Collect(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.INFO)
        self.lines = lines
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # a record that cannot be formatted is not worth failing a compile for
            self.lines.append(f"{record.levelname} {record.name}: (unformattable record)")


@contextmanager
def trial_log() -> Iterator[list[str]]:
    """Collect what the optimizers log while the block runs, instead of letting it reach the terminal.

    DSPy and optuna log every trial at INFO to stderr through handlers of their own (MIPROv2: ~200
    lines a compile, GEPA ~700): a command that shows a run's output would show them all. The lines
    go to the caller, which writes them to the step's log and the version's run; the loggers' own
    handlers are restored afterwards.
    """
    lines: list[str] = []
    collect = _Collect(lines)
    loggers = [logging.getLogger(name) for name in TRIAL_LOGGERS]
    saved = [(logger.handlers[:], logger.propagate, logger.level) for logger in loggers]
    for logger in loggers:
        logger.handlers = [collect]
        logger.propagate = False
        logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        for logger, (handlers, propagate, level) in zip(loggers, saved, strict=True):
            logger.handlers = handlers
            logger.propagate = propagate
            logger.setLevel(level)


@dataclass(frozen=True)
class DemoSource:
    predictor: str
    trace_id: str | None
    augmented: bool


@dataclass(frozen=True)
class DemoCoverage:
    """What one predictor could be shown: a predictor whose fields the traces do not log (an input the
    program computes in ``forward``, an intermediate output it does not return) gets fewer demos than
    the optimizer allows, and the run says so instead of quietly registering a weaker program."""

    predictor: str
    demos: int  # fixed demos it got (for KNNFewShot: entries of the pool, shown k per call)
    limit: int | None  # what the optimizer allows (None: no fixed limit)
    bootstrapped: int
    complete: int  # training examples holding every field it needs (a labeled demo needs all of them)
    examples: int
    missing: tuple[str, ...] = ()  # its fields some training examples lack, most often missing first

    def shortfall(self) -> str | None:
        """One clause when it got fewer demos than allowed for want of logged fields; None otherwise."""
        if self.limit is None or self.demos >= min(self.limit, self.examples) or not self.missing:
            return None
        return (f"{self.predictor}: {self.demos} of {self.limit} demos; {self.examples - self.complete} of {self.examples} training examples lack "
                f"{', '.join(self.missing)} (log what the program computes in forward: docs/optimizers.md#program-shapes)")

    def as_dict(self) -> dict[str, Any]:
        return {"predictor": self.predictor, "demos": self.demos, "limit": self.limit, "bootstrapped": self.bootstrapped, "complete": self.complete,
                "examples": self.examples, "missing": list(self.missing)}


def demo_limit(config: OptimizerConfig) -> int | None:
    params = config.params
    if config.name == "LabeledFewShot":
        return int(params.get("k", 16))
    if config.name in ("BootstrapFewShot", "BootstrapFewShotWithRandomSearch", "MIPROv2"):
        return int(params.get("max_bootstrapped_demos", 4)) + int(params.get("max_labeled_demos", 16 if config.name != "MIPROv2" else 4))
    return None


def demo_coverage(program: dspy.Module, trainset: list[dspy.Example], config: OptimizerConfig) -> list[DemoCoverage]:
    out = []
    pool = len(program.pool) if isinstance(program, knn.KNNProgram) else None
    for name, predictor in program.named_predictors():
        fields = knn.needed_fields(predictor)
        lacking = {f: sum(1 for ex in trainset if not knn.holds(ex, [f])) for f in fields}
        missing = tuple(f for f, n in sorted(lacking.items(), key=lambda kv: -kv[1]) if n)
        complete = sum(1 for ex in trainset if knn.holds(ex, fields))
        demos = pool if pool is not None else len(predictor.demos)
        bootstrapped = sum(1 for d in predictor.demos if d.get("augmented"))
        out.append(DemoCoverage(name, demos, len(trainset) if pool is not None else demo_limit(config), bootstrapped, complete, len(trainset), missing))
    return out


@dataclass(frozen=True)
class CompileResult:
    program: dspy.Module
    state: dict[str, Any]
    demos: list[DemoSource]
    pool: list[str | None] = field(default_factory=list)  # KNNFewShot: trace ids its calls draw demos from
    coverage: list[DemoCoverage] = field(default_factory=list)  # per predictor: demos it got, and why not more


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
    threads: int = 1,
) -> CompileResult:
    """Compile ``spec``'s program on ``trainset``; ``teacher`` (e.g. the champion) warm-starts it.
    ``threads`` is the optimizer's ``num_threads`` where it has one and the config leaves it unset.

    Every demo leaves with the ``trace_id`` it came from, so provenance survives into the program's
    JSON state and the checks downstream can prove where each demo was drawn from. Whatever fails
    in here (building the program or the teleprompter, compiling, reading the result) is raised as
    a :class:`CompileError` naming the optimizer, the program and the reason.
    """
    config = spec.config.optimizer
    try:
        return _compile(spec, trainset, metric, valset, teacher, threads)
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


def _compile(spec: ProgramSpec, trainset: list[dspy.Example], metric: Metric, valset: list[dspy.Example] | None,
             teacher: dspy.Module | None, threads: int = 1) -> CompileResult:
    config = spec.config.optimizer
    student = spec.build()
    if not trainset:
        compiled = student.reset_copy()
        return CompileResult(compiled, program_state(compiled), [])
    optimizer = _build(config, metric, threads)
    kwargs: dict[str, Any] = {"trainset": trainset} | {k: v for k, v in config.params.items() if k in COMPILE_PARAMS.get(config.name, set())}
    if config.name in _USES_VALSET and valset:
        kwargs["valset"] = valset
    if config.name == "MIPROv2" and "minibatch" not in kwargs:
        kwargs["minibatch"] = _mipro_minibatch(config.params, len(kwargs.get("valset") or trainset))
    if teacher is not None and "teacher" in inspect.signature(optimizer.compile).parameters:
        teacher = teacher.deepcopy()
        teacher._compiled = True  # keep its demos: DSPy would otherwise replace them with labeled ones
        kwargs["teacher"] = teacher
    compiled = optimizer.compile(student, **kwargs)
    usable_demos(compiled)
    if config.name == "LabeledFewShot" and config.params.get("k", 16) > 0 and not any(p.demos for p in compiled.predictors()):
        raise ValueError(knn.unlabeled_message(student, trainset))
    return CompileResult(compiled, program_state(compiled), demo_sources(compiled), knn.pool_trace_ids(compiled), demo_coverage(compiled, trainset, config))


def _mipro_minibatch(params: dict[str, Any], validation_size: int) -> bool:
    """Whether MIPROv2 should score trials on minibatches: only when the validation set is larger than
    one minibatch. Its ``auto`` modes decide this themselves; with ``auto: null`` DSPy keeps
    ``minibatch=True`` and refuses a validation set smaller than ``minibatch_size`` (35), which a
    small window has."""
    if params.get("auto", "light") is not None:
        return True
    return validation_size > params.get("minibatch_size", 35)


def _build(config: OptimizerConfig, metric: Metric, threads: int = 1) -> Any:
    if config.name not in OPTIMIZERS:
        raise ValueError(f"{config.name!r} names no teleprompter (auto is a portfolio: compile it with optimize.selection.optimize)")
    params = {k: v for k, v in config.params.items() if k not in COMPILE_PARAMS.get(config.name, set())}
    if "num_threads" not in params and "num_threads" in inspect.signature(OPTIMIZERS[config.name].__init__).parameters:
        params["num_threads"] = threads
    if config.name in _USES_METRIC:
        params["metric"] = gepa_metric(metric) if config.name == "GEPA" else metric
    if config.name in _NEEDS_REFLECTION_LM:
        params["reflection_lm"] = reflection_lm(config)
    return OPTIMIZERS[config.name](**params)


def reflection_lm(config: OptimizerConfig) -> dspy.LM:
    """``reflection_lm`` when configured; else the LM the compile runs with, so its calls are metered
    with the rest (the offline LM when ``TELEPROMPT_LM`` is unset, which answers GEPA's proposer).
    A configured one goes through the same gateway settings, store and run budget as the compile's LM."""
    from teleprompt_assets.core.gateway import gateway_lm, gateway_of
    from teleprompt_assets.core.lm import build_lm

    current = getattr(dspy.settings, "lm", None)
    if config.reflection_lm:
        gateway = gateway_of(current) if current is not None else None
        if gateway is None:
            return build_lm(config.reflection_lm)
        return gateway_lm(build_lm(config.reflection_lm, num_retries=0, timeout_s=gateway.config.timeout_s), gateway.config, gateway.store, gateway.run_id)
    return current if current is not None else build_lm()


def gepa_metric(metric: Metric) -> Callable[..., Any]:
    """``metric`` as GEPA calls it: ``(gold, pred, trace, pred_name, pred_trace)``.

    The score is the program's metric on the whole prediction, at program and predictor level alike
    (GEPA warns when they differ). Feedback text, GEPA's material for reflection, is what the metric
    returned (a ``dspy.Prediction(score=..., feedback=...)``), else what its ``feedback(example,
    prediction)`` attribute says (see :func:`teleprompt_assets.training.metrics.window_metric`); without
    either GEPA writes its own "This trajectory got a score of ...".
    """
    explain = getattr(metric, "feedback", None)

    def scored(gold: dspy.Example, pred: Any, trace: Any = None, pred_name: str | None = None, pred_trace: Any = None) -> Any:
        value = metric(gold, pred, trace)
        score = float(value)
        text = getattr(value, "feedback", None) if isinstance(value, dspy.Prediction) else None
        if text is None and explain is not None:
            text = explain(gold, pred)
        return dspy.Prediction(score=score, feedback=text) if text else score

    scored.__name__ = f"gepa_{getattr(metric, '__name__', 'metric')}"
    return scored


def _record_bootstrap_sources() -> None:
    """Make DSPy's bootstrap remember which training example each of its demos came from.

    ``BootstrapFewShot._bootstrap_one_example(example)`` runs the teacher on one example and appends
    one demo per predictor step to ``name2traces``, built from the step's inputs and outputs only.
    Wrapped here (once per process), the demos a call appended are stamped with that example's
    provenance. BootstrapFewShotWithRandomSearch and MIPROv2 bootstrap through the same method, so
    their demos are stamped too. An example without a ``trace_id`` stamps nothing, and a demo that
    came without one keeps none: prompt_quality then refuses it.
    """
    original = BootstrapFewShot._bootstrap_one_example
    if getattr(original, "records_sources", False):
        return

    @functools.wraps(original)
    def bootstrap_one_example(self: BootstrapFewShot, example: dspy.Example, round_idx: int = 0) -> bool:
        before = {name: len(demos) for name, demos in getattr(self, "name2traces", {}).items()}
        success = original(self, example, round_idx)
        source = {f: example.get(f) for f in PROVENANCE}
        if source["trace_id"] is not None:
            for name, demos in getattr(self, "name2traces", {}).items():
                for i in range(before.get(name, 0), len(demos)):
                    demos[i] = demos[i].copy(**source)
        return success

    bootstrap_one_example.records_sources = True  # type: ignore[attr-defined]
    BootstrapFewShot._bootstrap_one_example = bootstrap_one_example


_record_bootstrap_sources()


def usable_demos(program: dspy.Module) -> None:
    """Keep each predictor's demos that fill its fields, the first one per value of its inputs.

    A training example lacks a field when traces do not log it: a program that returns only its last
    step's output never logs the ``intent`` its first step produced, so its labeled examples cannot
    show ``classify`` an intent (bootstrapped demos can: they record what the step produced).
    Optimizers also pick demos per program example, so a predictor that sees fewer inputs than the
    program (``classify`` sees ``email``, not ``customer_name``) would show one input twice,
    possibly with two answers. Both would fail prompt_quality; the first demo keeps its place and
    its provenance.
    """
    for predictor in program.predictors():
        fields = knn.needed_fields(predictor)
        complete = [demo for demo in predictor.demos if knn.holds(demo, fields)]
        predictor.demos = knn.distinct_by(complete, list(predictor.signature.input_fields))


def demo_sources(program: dspy.Module) -> list[DemoSource]:
    return [
        DemoSource(name, demo.get("trace_id"), bool(demo.get("augmented", False)))
        for name, predictor in program.named_predictors()
        for demo in predictor.demos
    ]


def without_traces(program: dspy.Module, trace_ids: set[str]) -> dspy.Module:
    """A copy of ``program`` that never shows what was drawn from ``trace_ids``: neither a fixed demo
    nor, for a KNNFewShot program, a pool entry. What a program loses without them is their impact."""
    copy = program.deepcopy()
    if isinstance(copy, knn.KNNProgram):
        copy.pool = [ex for ex in copy.pool if ex.get("trace_id") not in trace_ids]
        copy._clear_cache()
    for predictor in copy.predictors():
        predictor.demos = [demo for demo in predictor.demos if demo.get("trace_id") not in trace_ids]
    return copy
