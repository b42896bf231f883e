"""``contributor_rewards``: reward weights per program, one step per program of the run
(``defs/fanout.py``): the leave-one-out demo impact calls the LM for every demo."""


import dagster as dg
import polars as pl

from teleprompt_assets.core.lm import build_lm
from teleprompt_assets.defs.fanout import collector, per_program_asset, staged
from teleprompt_assets.defs.io import ByPartition
from teleprompt_assets.defs.optimize import SKIPPED
from teleprompt_assets.defs.partitions import target_of
from teleprompt_assets.defs.resources import TelepromptResource, lm_stage
from teleprompt_assets.defs.run_tracking import Tracking, track
from teleprompt_assets.optimize import teleprompters
from teleprompt_assets.reward import attribution, impact
from teleprompt_assets.reward.attribution import PPM
from teleprompt_assets.training import datasets, label_noise, metrics

REWARDS_SCHEMA = {"contributor": pl.String, "traces": pl.Int64, "demos": pl.Int64, "impact": pl.Int64, "weight_ppm": pl.Int64,
                  "label_factor_ppm": pl.Int64, "volume_ppm": pl.Int64, "quality_ppm": pl.Int64, "impact_ppm": pl.Int64}


@dg.op
def reward_program(context: dg.OpExecutionContext, teleprompt: TelepromptResource, mlflow: Tracking, key: str, training_set: ByPartition,
                   compiled_program: ByPartition) -> dict:
    """Reward weights (ppm, summing to 1,000,000): volume, outcome quality and leave-one-out demo impact."""
    t, table, compiled = target_of(key), training_set[key], compiled_program[key]
    if SKIPPED in compiled:
        return staged(key, [], {SKIPPED: compiled[SKIPPED], "contributors": 0})
    spec = teleprompt.spec(t.program)
    config = teleprompt.project().rewards
    lm = teleprompt.lm(context.run_id, build_lm)
    with lm_stage(lm, f"{t.program}: reward weights stopped, nothing attested") as spent:
        measured = impact.demo_impact(teleprompters.load_state(spec, compiled["state"]), datasets.examples(table, spec, "holdout"),
                                      metrics.window_metric(spec, table)[0], lm, config.impact_budget, teleprompt.project().lm.concurrency)
    credible = label_noise.credible(table)
    checked = "label_issue" in table.columns
    factor = attribution.label_factor(table.select("contributor", "label", "label_issue", "label_suggested").iter_rows()) if checked else {}
    label_of = dict(table.select("trace_id", "label").iter_rows()) if "label" in table.columns else {}
    credit = attribution.pooled_credit([(d["contributor"], label_of.get(d["trace_id"]), units) for (_, _, units), d in zip(measured.credits, compiled["demos"], strict=True)],
                                       credible.select("contributor", pl.col("label") if "label" in credible.columns else pl.lit(None)).iter_rows(), factor)
    weights = attribution.reward_weights(credible.select("contributor", "feedback").iter_rows(),
                                         [d["contributor"] for d in compiled["demos"] if d["contributor"]], credit, config, factor)
    rows = [{"contributor": r.contributor, "traces": r.traces, "demos": r.demos, "impact": int(r.impact), "weight_ppm": r.weight_ppm,
             "label_factor_ppm": int(r.label_factor * PPM), "volume_ppm": int(r.volume_share * PPM), "quality_ppm": int(r.quality_share * PPM),
             "impact_ppm": int(r.impact_share * PPM)} for r in weights]
    track(mlflow, t, metrics={"contributors": len(rows), "impact_lm_calls": spent.calls, "impact_answers_reused": spent.reused})
    return staged(key, rows, {
        "contributors": len(rows), "weight_sum_ppm": sum(r["weight_ppm"] for r in rows),
        "impact_method": f"{measured.method} on {measured.examples_used}/{measured.examples_total} holdout examples",
        "impact_lm_calls": spent.calls, "answers_reused": spent.reused, "weights": _markdown(rows),
        f"{t.program}.contributors": len(rows), f"{t.program}.top_share_ppm": max((r["weight_ppm"] for r in rows), default=0),
    }, markdown=("weights",))


def _markdown(rows: list[dict]) -> str:
    columns = list(REWARDS_SCHEMA)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows])


def build_contributor_rewards(partitions: dg.PartitionsDefinition, group: str) -> dg.AssetsDefinition:
    collect = collector("contributor_rewards", lambda rows: pl.DataFrame(rows, schema=REWARDS_SCHEMA))
    return per_program_asset("contributor_rewards", reward_program, collect, partitions=partitions, group=group, kinds={"polars"},
                             description="Reward weights (ppm, summing to 1,000,000): volume, outcome quality and leave-one-out demo impact. One step per program.")
