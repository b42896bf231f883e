"""Leave-one-out credit for a compiled program's demos, measured on the holdout.

A demo's credit is C_full − C_without (quantized holdout score sums): how much the program loses
when that one demo is taken out. It is negative for a demo that hurts (the program does better
without it); the reward weights give such a demo nothing (``attribution.pooled_credit``). It costs (demos + 1) × holdout program calls;
when that exceeds the LM-call budget, the first k holdout examples (k as large as the budget
allows, in holdout order) are used and the report says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import dspy

from teleprompt_assets.core.parallel import map_ordered
from teleprompt_assets.core.spec import Metric
from teleprompt_assets.evaluate.deltaone import quantize
from teleprompt_assets.evaluate.scoring import run_one


@dataclass(frozen=True)
class DemoImpact:
    credits: list[tuple[str, int, int]]  # (predictor name, demo index, credit in quantized score units)
    examples_used: int
    examples_total: int
    lm_calls: int
    method: str = field(default="leave-one-out")


def demo_impact(program: dspy.Module, holdout: Sequence[dspy.Example], metric: Metric, lm: dspy.LM, budget: int, concurrency: int = 1) -> DemoImpact:
    """Every (variant, example) pair is one task, ``concurrency`` at a time; sums are per variant, so the
    credits do not depend on the order the answers arrive in."""
    slots = [(name, i) for name, predictor in program.named_predictors() for i in range(len(predictor.demos))]
    calls_per_example = (len(slots) + 1) * max(1, len(program.predictors()))
    used = min(len(holdout), budget // calls_per_example) if slots else 0
    examples = list(holdout[:used])
    variants = [program]
    for name, index in slots:
        ablated = program.deepcopy()
        predictor = dict(ablated.named_predictors())[name]
        predictor.demos = [d for j, d in enumerate(predictor.demos) if j != index]
        variants.append(ablated)
    tasks = [(v, ex) for v in range(len(variants)) for ex in examples]
    with dspy.context(lm=lm):
        scores = map_ordered(lambda task: quantize(run_one(variants[task[0]], task[1], metric)[0]), tasks, concurrency)
    totals = [sum(scores[v * len(examples):(v + 1) * len(examples)]) for v in range(len(variants))]
    credits = [(name, index, totals[0] - totals[k]) for k, (name, index) in enumerate(slots, 1)]
    return DemoImpact(credits, used, len(holdout), used * calls_per_example)
