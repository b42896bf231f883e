"""``contributor_rewards``: reward weights per program, one step per program of the run
(``defs/fanout.py``): measuring the demos' impact calls the LM (at most as often as the evaluation)."""


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
from teleprompt_assets.reward import weigh
from teleprompt_assets.reward.attribution import PPM
from teleprompt_assets.training import metrics

REWARDS_SCHEMA = {"contributor": pl.String, "traces": pl.Int64, "demos": pl.Int64, "impact": pl.Int64, "weight_ppm": pl.Int64,
                  "label_factor_ppm": pl.Int64, "volume_ppm": pl.Int64, "quality_ppm": pl.Int64, "impact_ppm": pl.Int64}


@dg.op
def reward_program(context: dg.OpExecutionContext, teleprompt: TelepromptResource, mlflow: Tracking, key: str, training_set: ByPartition,
                   compiled_program: ByPartition, evaluation_report: ByPartition) -> dict:
    """Reward weights (ppm, summing to 1,000,000): volume, outcome quality and the demos' impact by group (``reward/impact.py``)."""
    t, table, compiled = target_of(key), training_set[key], compiled_program[key]
    if SKIPPED in compiled:
        return staged(key, [], {SKIPPED: compiled[SKIPPED], "contributors": 0})
    spec = teleprompt.spec(t.program)
    lm = teleprompt.lm(context.run_id, build_lm)
    with lm_stage(lm, f"{t.program}: reward weights stopped, nothing attested") as spent:
        # the full program's held-out scores are the candidate's, measured by the evaluation: not paid again
        full = {s["example_hash"]: s["candidate_q"] for s in evaluation_report[key].get("scores", [])}
        weighed = weigh.weigh(spec, table, teleprompters.load_state(spec, compiled["state"]), compiled["demos"], metrics.window_metric(spec, table)[0], lm,
                              teleprompt.project().rewards, teleprompt.project().lm.concurrency, full_scores=full or None)
    measured, weights = weighed.impact, weighed.rows
    rows = [{"contributor": r.contributor, "traces": r.traces, "demos": r.demos, "impact": int(r.impact), "weight_ppm": r.weight_ppm,
             "label_factor_ppm": int(r.label_factor * PPM), "volume_ppm": int(r.volume_share * PPM), "quality_ppm": int(r.quality_share * PPM),
             "impact_ppm": int(r.impact_share * PPM)} for r in weights]
    track(mlflow, t, metrics={"contributors": len(rows), "impact_lm_calls": spent.calls, "impact_answers_reused": spent.reused})
    return staged(key, rows, {
        "contributors": len(rows), "weight_sum_ppm": sum(r["weight_ppm"] for r in rows),
        "impact_method": f"{measured.method} ({len(measured.credits)} groups) on {measured.examples_used}/{measured.examples_total} holdout examples",
        "impact_groups": {str(label): units for label, units in measured.credits},
        "impact_lm_calls": spent.calls, "answers_reused": spent.reused, "weights": _markdown(rows),
        f"{t.program}.contributors": len(rows), f"{t.program}.top_share_ppm": max((r["weight_ppm"] for r in rows), default=0),
    }, markdown=("weights",), as_json=("impact_groups",))


def _markdown(rows: list[dict]) -> str:
    columns = list(REWARDS_SCHEMA)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows])


def build_contributor_rewards(partitions: dg.PartitionsDefinition, group: str) -> dg.AssetsDefinition:
    collect = collector("contributor_rewards", lambda rows: pl.DataFrame(rows, schema=REWARDS_SCHEMA))
    return per_program_asset("contributor_rewards", reward_program, collect, partitions=partitions, group=group, kinds={"polars"}, reads_evaluation=True,
                             description="Reward weights (ppm, summing to 1,000,000): volume, outcome quality and the demos' impact, by group, at the cost of one evaluation. One step per program.")
