"""What the registered program learns from, and which teleprompter makes it (docs/optimizers.md).

Two rules, both measured with ``benchmarks/peer.py`` against plain DSPy on the same traffic:

- **The window is used.** The holdout is the only part an honest evaluation must keep back. An
  optimizer that validates (``BootstrapFewShotWithRandomSearch``, ``MIPROv2``, ``GEPA``) compiles on
  train and validates on dev; every other one compiles on train and dev together, since nothing
  else would look at dev.
- **``optimizer: auto`` selects.** A portfolio (KNNFewShot, BootstrapFewShot, random search and a
  budgeted MIPROv2 by default) compiles on train, each candidate is scored on the same dev sample
  with the program's metric, and the best is kept (a tie goes to the earlier candidate). A winner
  that does not validate is then compiled again on train and dev: that refit program is what the
  evaluation scores on the holdout and what is registered. Every candidate's dev score and LM
  calls travel with the compiled program into the version's MLflow run.

The portfolio spends at most ``budget`` LM calls: before each candidate its cost is estimated from
the split sizes (an upper bound without answer reuse), and a candidate that would not fit is
skipped and says so. Answers are reused within the process by the gateway, so candidates that
render the same prompt (random search's zero-shot and labeled-only programs, the final scoring of
a program the search already scored) pay once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import dspy
from dspy.utils.exceptions import AdapterParseError

from teleprompt_assets.core.config import OptimizerConfig
from teleprompt_assets.core.gateway import gateway_of
from teleprompt_assets.core.optimizers import AUTO, KNN, AutoParams
from teleprompt_assets.core.parallel import map_ordered
from teleprompt_assets.core.spec import Metric, ProgramSpec
from teleprompt_assets.optimize import teleprompters

VALIDATES = frozenset({"BootstrapFewShotWithRandomSearch", "MIPROv2", "GEPA"})


@dataclass(frozen=True)
class Window:
    """The examples an optimization may use. ``train`` and ``dev_taught`` may become demos (for an
    outcome-only program only those with a good outcome); ``dev`` is scored, whole."""

    train: list[dspy.Example]
    dev: list[dspy.Example]
    dev_taught: list[dspy.Example]


@dataclass(frozen=True)
class Candidate:
    """One teleprompter of the portfolio: its dev score, or why it has none."""

    optimizer: str
    dev_score: float | None = None  # mean metric on the dev sample
    dev_count: int = 0
    lm_calls: int = 0
    estimate: int = 0
    note: str = ""  # "chosen", "skipped: ...", "failed: ..."

    def as_dict(self) -> dict:
        return {"optimizer": self.optimizer, "dev_score": self.dev_score, "dev_count": self.dev_count, "lm_calls": self.lm_calls,
                "estimate": self.estimate, "note": self.note}


@dataclass(frozen=True)
class Optimized:
    result: teleprompters.CompileResult
    optimizer: OptimizerConfig  # the teleprompter that made the program (auto's choice)
    learned_from: tuple[str, ...]  # splits whose examples it compiled on
    candidates: tuple[Candidate, ...] = field(default=())


def spent_calls() -> int:
    """LM calls made so far through the current LM (its gateway's count; else its history)."""
    lm = dspy.settings.lm
    gateway = gateway_of(lm) if lm is not None else None
    return gateway.stats().calls if gateway is not None else len(getattr(lm, "history", None) or [])


def optimize(spec: ProgramSpec, window: Window, metric: Metric, teacher: dspy.Module | None = None, threads: int = 1) -> Optimized:
    """The program ``spec``'s optimizer makes from ``window`` (see the module docstring)."""
    config = spec.config.optimizer
    if config.name == AUTO:
        return _select(spec, window, metric, teacher, threads)
    return _compile_with(spec, config, window, metric, teacher, threads)


def _compile_with(spec: ProgramSpec, config: OptimizerConfig, window: Window, metric: Metric, teacher: dspy.Module | None, threads: int) -> Optimized:
    own = _as(spec, config)
    if config.name in VALIDATES:
        result = teleprompters.compile_program(own, window.train, metric, window.dev, teacher, threads)
        return Optimized(result, config, ("train",))
    result = teleprompters.compile_program(own, window.train + window.dev_taught, metric, None, teacher, threads)
    return Optimized(result, config, ("train", "dev"))


def _as(spec: ProgramSpec, config: OptimizerConfig) -> ProgramSpec:
    return ProgramSpec(spec.name, spec.config.model_copy(update={"optimizer": config}))


def dev_sample(dev: Sequence[dspy.Example], size: int) -> list[dspy.Example]:
    """At most ``size`` dev examples: those with the smallest trace hash (a fixed uniform sample), in dev order."""
    if len(dev) <= size:
        return list(dev)
    kept = {id(ex) for ex in sorted(dev, key=lambda ex: str(ex.get("trace_hash") or ""))[:size]}
    return [ex for ex in dev if id(ex) in kept]


def dev_score(program: dspy.Module, dev: Sequence[dspy.Example], metric: Metric, threads: int) -> Fraction:
    """The metric's exact sum over ``dev``; an answer the adapter cannot parse scores 0, but when no
    answer parses the LM is not answering the program's format at all: that is the candidate's
    failure (:class:`~teleprompt_assets.optimize.teleprompters.CompileError`), not a score of 0."""
    unreadable: list[str] = []

    def one(example: dspy.Example) -> Fraction:
        try:
            return Fraction(float(metric(example, program(**example.inputs()), None)))
        except AdapterParseError as exc:
            unreadable.append(f"{type(exc).__name__}: {str(exc)[:200]}")
            return Fraction(0)

    total = sum(map_ordered(one, list(dev), threads), Fraction(0))
    if dev and len(unreadable) == len(dev):
        raise teleprompters.CompileError(f"none of its {len(dev)} dev answers could be parsed ({unreadable[0]})", transient=False)
    return total


def estimate_calls(config: OptimizerConfig, train: int, dev: int, predictors: int) -> int:
    """An upper bound of a candidate's LM calls (compile and dev scoring), without answer reuse."""
    params = config.params
    boot = min(train, 2 * params.get("max_bootstrapped_demos", 4) + 2) * predictors
    score = dev * predictors
    if config.name in (KNN, "LabeledFewShot"):
        return score
    if config.name == "BootstrapFewShot":
        return boot + score
    if config.name == "BootstrapFewShotWithRandomSearch":
        programs = 3 + params.get("num_candidate_programs", 16)
        return programs * score + (programs - 2) * boot + score
    if config.name == "MIPROv2":
        candidates, trials = params.get("num_candidates", 3), params.get("num_trials", 4)
        return (trials + 2) * score + candidates * boot + 2 * candidates * predictors + 10
    return score


def _select(spec: ProgramSpec, window: Window, metric: Metric, teacher: dspy.Module | None, threads: int) -> Optimized:
    auto = AutoParams.parse(spec.config.optimizer.params)
    dev = dev_sample(window.dev, auto.max_dev)
    if not dev:  # nothing to select on: the first candidate, compiled on all there is
        first = auto.configs(spec.config.optimizer)[0]
        chosen = _compile_with(spec, first, window, metric, teacher, threads)
        return Optimized(chosen.result, first, chosen.learned_from, (Candidate(first.name, note="chosen: no dev examples to compare on"),))
    predictors = max(1, len(spec.build().predictors()))
    started = spent_calls()
    tried: list[tuple[Candidate, teleprompters.CompileResult | None, OptimizerConfig]] = []
    for config in auto.configs(spec.config.optimizer):
        estimate = estimate_calls(config, len(window.train), len(dev), predictors)
        left = auto.budget - (spent_calls() - started)
        if estimate > left:
            tried.append((Candidate(config.name, estimate=estimate, note=f"skipped: estimated {estimate} LM calls, {left} left of the budget"), None, config))
            continue
        before = spent_calls()
        try:
            result = teleprompters.compile_program(_as(spec, config), window.train, metric, dev if config.name in VALIDATES else None, teacher, threads)
            total = dev_score(result.program, dev, metric, threads)
        except teleprompters.CompileError as exc:
            if exc.transient:
                raise
            tried.append((Candidate(config.name, estimate=estimate, lm_calls=spent_calls() - before, note=f"failed: {exc}"[:300]), None, config))
            continue
        tried.append((Candidate(config.name, float(total / len(dev)), len(dev), spent_calls() - before, estimate), result, config))
    scored = [(c.dev_score, -i) for i, (c, r, _) in enumerate(tried) if r is not None]
    if not scored:
        reasons = "; ".join(f"{c.optimizer}: {c.note}" for c, _, _ in tried)
        raise teleprompters.CompileError(f"auto: no candidate compiled ({reasons})", transient=False)
    best = -max(scored)[1]
    winner, result, config = tried[best]
    learned: tuple[str, ...] = ("train",)
    if config.name not in VALIDATES and window.dev_taught:
        result = teleprompters.compile_program(_as(spec, config), window.train + window.dev_taught, metric, None, teacher, threads)
        learned = ("train", "dev")
    candidates = tuple(
        c if i != best else Candidate(c.optimizer, c.dev_score, c.dev_count, c.lm_calls, c.estimate, "chosen" + (", refit on train + dev" if len(learned) == 2 else ""))
        for i, (c, _, _) in enumerate(tried))
    return Optimized(result, config, learned, candidates)


def describe(candidates: Sequence[Candidate]) -> str:
    """One line per candidate, for logs and metadata."""
    lines = []
    for c in candidates:
        score = f"dev {c.dev_score:.3f} on {c.dev_count}" if c.dev_score is not None else "no dev score"
        lines.append(f"{c.optimizer}: {score}, {c.lm_calls} LM calls{(' - ' + c.note) if c.note else ''}")
    return "\n".join(lines)

