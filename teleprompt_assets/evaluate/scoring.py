"""Running baseline and candidate on the same held-out examples with the program's metric.

The arithmetic that decides (quantized scores, DeltaOne, the bootstrap) is :mod:`.deltaone`, which
imports no DSPy, so the attestation verifier can use it alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import dspy
from dspy.utils.exceptions import AdapterParseError

from teleprompt_assets.core.parallel import map_ordered
from teleprompt_assets.core.spec import Metric
from teleprompt_assets.evaluate.deltaone import ExampleScore, quantize


class EvaluationAborted(RuntimeError):
    """The LM or the program failed on a held-out example: the comparison would measure the outage."""


def run_one(program: dspy.Module, example: dspy.Example, metric: Metric) -> tuple[float, Any]:
    """Score one example. An answer the adapter cannot parse is a wrong answer (the LM did answer);
    any other failure aborts: scoring an LM outage as wrong answers would give B = C = 0 for both
    programs and let an unmeasured candidate through the C >= B gate."""
    try:
        prediction = program(**example.inputs())
    except AdapterParseError as exc:
        return 0.0, f"error: {type(exc).__name__}"
    except Exception as exc:
        raise EvaluationAborted(f"evaluation stopped at held-out example {example.get('trace_id')}: {type(exc).__name__}: {str(exc)[:200]}") from exc
    return float(metric(example, prediction, None)), prediction


def score_pair(
    baseline: dspy.Module, candidate: dspy.Module, holdout: Sequence[dspy.Example], metric: Metric, lm: dspy.LM, output_field: str,
    progress: Callable[[int, int], None] | None = None, concurrency: int = 1,
) -> list[ExampleScore]:
    """Both programs, same examples, same LM, same metric; ``concurrency`` examples at a time, scores in
    holdout order whatever the order the answers arrive in. ``progress(done, total)`` after each tenth."""
    step = max(1, len(holdout) // 10)

    def score(example: dspy.Example) -> ExampleScore:
        sb, pb = run_one(baseline, example, metric)
        sc, pc = run_one(candidate, example, metric)
        return ExampleScore(example.trace_hash, example.trace_id, example.contributor, quantize(sb), quantize(sc),
                            str(getattr(pb, output_field, pb)), str(getattr(pc, output_field, pc)))

    def report(done: int) -> None:
        if progress is not None and (done % step == 0 or done == len(holdout)):
            progress(done, len(holdout))

    with dspy.context(lm=lm):
        return map_ordered(score, list(holdout), concurrency, report)
