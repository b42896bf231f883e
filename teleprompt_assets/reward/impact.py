"""What the compiled program's demos are worth, measured on the holdout at the cost of one evaluation.

Demos are credited by *group*: the demos (or KNN pool entries) whose traces carry one label of a
categorical output, or all of them for a free-text output. A group's units are C_full − C_without:
the quantized score the program loses on the held-out examples when it never shows that group.
The reward weights share a group's units among every trace with its label
(``attribution.pooled_credit``): which of several like traces the optimizer happened to pick is its
choice, not the contributors' merit, so measuring each demo alone (leave-one-out) bought nothing
the weights use, at (demos + 1) × holdout program runs, ten times the evaluation it explains.

Cost. A group is measured on the held-out examples whose gold label is its label: that is where
showing a queue's examples can change an answer (the effect of a group on other labels' examples,
usually a wrong answer it caused, is harm, which the weights exclude anyway). Each example is thus
run once without one group and once as the full program: at most 2 × holdout × predictors
program-step calls, the evaluation's own count. The full program's scores are the candidate's
held-out scores, which the evaluation measured: given them (``full_scores``, as the pipeline does),
only the ablated runs are made and the impact costs half an evaluation. A free-text output has one group, every demo, measured on
every example. When ``budget`` is smaller, the examples are taken in holdout order while they fit
and the report says how many were used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import dspy

from teleprompt_assets.core.parallel import map_ordered
from teleprompt_assets.core.spec import Metric
from teleprompt_assets.evaluate.deltaone import quantize
from teleprompt_assets.evaluate.scoring import run_one
from teleprompt_assets.optimize import knn, teleprompters

ALL = None  # the one group of a free-text output


@dataclass(frozen=True)
class GroupImpact:
    credits: list[tuple[str | None, int]]  # (label, or None for every demo; units: C_full − C_without on its examples)
    examples_used: int
    examples_total: int
    program_runs: int  # program runs the measurement needed (each one LM call per predictor, before reuse)
    method: str = field(default="group ablation")


def sources(program: dspy.Module) -> list[str]:
    """The trace ids a program shows: its demos' and, for KNNFewShot, its pool's."""
    ids = [demo.get("trace_id") for predictor in program.predictors() for demo in predictor.demos]
    return [i for i in [*ids, *knn.pool_trace_ids(program)] if i]


def group_impact(program: dspy.Module, holdout: Sequence[dspy.Example], metric: Metric, lm: dspy.LM, labels: Mapping[str, str | None],
                 field_name: str | None, budget: int, concurrency: int = 1, full_scores: Mapping[str, int] | None = None) -> GroupImpact:
    """``labels``: the label of every trace the program may show (None or absent: free text), and
    ``field_name`` the output holding it on a held-out example; ``budget``: most program-step calls;
    ``full_scores``: the full program's quantized scores by trace hash, already measured (the
    evaluation's candidate side): those examples are not run again."""
    shown = sources(program)
    by_group: dict[str | None, set[str]] = {}
    for trace_id in shown:
        by_group.setdefault(labels.get(trace_id) if field_name else ALL, set()).add(trace_id)
    if None in by_group and len(by_group) > 1:  # unlabeled demos beside labeled ones: they are one more group of their own
        by_group["(unlabeled)"] = by_group.pop(None)
    predictors = max(1, len(program.predictors()))
    known = full_scores or {}
    tasks: list[tuple[str | None, dspy.Example]] = []
    cost = 0
    for example in holdout:
        group = ALL if list(by_group) == [ALL] else str(example.get(field_name)) if field_name else ALL
        runs = 1 if example.get("trace_hash") in known else 2
        if group in by_group and cost + runs * predictors <= budget:
            tasks.append((group, example))
            cost += runs * predictors
    variants = {group: teleprompters.without_traces(program, ids) for group, ids in by_group.items()}
    unknown = [ex for _, ex in tasks if ex.get("trace_hash") not in known]
    jobs = [(program, ex) for ex in unknown] + [(variants[group], ex) for group, ex in tasks]
    with dspy.context(lm=lm):
        scores = map_ordered(lambda job: quantize(run_one(job[0], job[1], metric)[0]), jobs, concurrency)
    measured_full = dict(zip((id(ex) for ex in unknown), scores[: len(unknown)], strict=True))
    full = [known[ex.get("trace_hash")] if ex.get("trace_hash") in known else measured_full[id(ex)] for _, ex in tasks]
    without = scores[len(unknown):]
    units: dict[str | None, int] = {group: 0 for group in by_group}
    for (group, _), f, w in zip(tasks, full, without, strict=True):
        units[group] += f - w
    return GroupImpact(sorted(units.items(), key=lambda kv: str(kv[0])), len(tasks), len(holdout), len(jobs))
