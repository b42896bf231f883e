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
    progress: Callable[[str, int, int], None] | None = None, concurrency: int = 1, between: Callable[[], None] | None = None,
) -> list[ExampleScore]:
    """Both programs, same examples, same LM, same metric: all baseline answers, then all candidate
    answers (``between()`` runs in between, so a caller can tell what each side cost), each side
    ``concurrency`` examples at a time. Scores are in holdout order whatever order the answers arrive
    in. ``progress(side, done, total)`` after each tenth."""
    examples = list(holdout)
    step = max(1, len(examples) // 10)

    def answers(program: dspy.Module, side: str) -> list[tuple[float, Any]]:
        def report(done: int) -> None:
            if progress is not None and (done % step == 0 or done == len(examples)):
                progress(side, done, len(examples))

        return map_ordered(lambda example: run_one(program, example, metric), examples, concurrency, report)

    with dspy.context(lm=lm):
        base = answers(baseline, "baseline")
        if between is not None:
            between()
        cand = answers(candidate, "candidate")
    return [ExampleScore(ex.trace_hash, ex.trace_id, ex.contributor, quantize(sb), quantize(sc), str(getattr(pb, output_field, pb)), str(getattr(pc, output_field, pc)))
            for ex, (sb, pb), (sc, pc) in zip(examples, base, cand, strict=True)]
