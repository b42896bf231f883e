"""One program's reward weights for one window: the demos' impact measured, then mixed with volume
and quality (docs/attestations.md, "Reward weights"). The Dagster step and the reward game call this
same function, so the game measures what the pipeline pays."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import dspy
import polars as pl

from teleprompt_assets.core.config import RewardsConfig
from teleprompt_assets.core.spec import Metric, ProgramSpec
from teleprompt_assets.reward import attribution, impact
from teleprompt_assets.training import datasets, label_noise


@dataclass(frozen=True)
class Weighed:
    rows: list[attribution.ContributorRow]
    impact: impact.GroupImpact


def impact_budget(config: RewardsConfig, holdout: int, predictors: int) -> int:
    """Program-step calls the impact may cost: what the held-out evaluation costs (baseline and
    candidate on every example), and never more than ``rewards.impact_budget``."""
    return min(config.impact_budget, 2 * holdout * max(1, predictors))


def weigh(spec: ProgramSpec, table: pl.DataFrame, program: dspy.Module, demos: Sequence[Mapping[str, object]], metric: Metric, lm: dspy.LM,
          config: RewardsConfig, concurrency: int = 1, full_scores: Mapping[str, int] | None = None) -> Weighed:
    """``table``: the window's training table (with the label check's columns); ``demos``: the compiled
    program's demo records (``contributor`` each); ``program``: the compiled program itself;
    ``full_scores``: its quantized held-out scores by trace hash when the evaluation measured them."""
    holdout = datasets.examples(table, spec, "holdout")
    labels = dict(table.select("trace_id", "label").iter_rows()) if "label" in table.columns else {}
    categorical = spec.config.metric.kind in ("exact_match", "token_f1") and label_noise.categorical(list(labels.values()))
    label_field = (spec.config.metric.field or spec.output_fields[0]) if categorical else None
    budget = impact_budget(config, len(holdout), len(program.predictors()))
    measured = impact.group_impact(program, holdout, metric, lm, labels, label_field, budget, concurrency, full_scores)
    credible = label_noise.credible(table)
    checked = "label_issue" in table.columns
    factor = attribution.label_factor(table.select("contributor", "label", "label_issue", "label_suggested").iter_rows()) if checked else {}
    pool = credible.select("contributor", pl.col("label") if "label" in credible.columns else pl.lit(None)).iter_rows()
    credit = attribution.pooled_credit([(None, label, units) for label, units in measured.credits], pool, factor)
    rows = attribution.reward_weights(credible.select("contributor", "feedback").iter_rows(), [str(d["contributor"]) for d in demos if d.get("contributor")],
                                      credit, config, factor)
    return Weighed(rows, measured)
