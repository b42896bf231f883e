"""``evaluation_report``: baseline against candidate, one step per program of the run
(``defs/fanout.py``), so a run's programs are scored side by side."""

import dagster as dg

from teleprompt_assets.core.gateway import gateway_of
from teleprompt_assets.core.lm import build_lm
from teleprompt_assets.defs.fanout import collector, per_program_asset, staged
from teleprompt_assets.defs.io import ByPartition
from teleprompt_assets.defs.optimize import SKIPPED
from teleprompt_assets.defs.partitions import Target, target_of, window_label
from teleprompt_assets.defs.resources import TelepromptResource, lm_stage
from teleprompt_assets.defs.run_tracking import Tracking, track
from teleprompt_assets.evaluate import deltaone, history, report, scoring
from teleprompt_assets.optimize import teleprompters
from teleprompt_assets.register import registry
from teleprompt_assets.training import datasets, metrics


@dg.op
def evaluate_program(context: dg.OpExecutionContext, teleprompt: TelepromptResource, mlflow: Tracking, key: str,
                     training_set: ByPartition, compiled_program: ByPartition) -> dict:
    """Baseline (champion, else uncompiled) vs candidate on the same holdout; DeltaOne decided exactly."""
    t, table, compiled = target_of(key), training_set[key], compiled_program[key]
    if SKIPPED in compiled:
        return staged(key, {SKIPPED: compiled[SKIPPED]}, {SKIPPED: compiled[SKIPPED]})
    spec = teleprompt.spec(t.program)
    holdout = datasets.examples(table, spec, "holdout")
    window = window_label(t.day, teleprompt.project().window_days)
    baseline, baseline_version = registry.baseline_for(teleprompt.client(), spec, compiled["program_hash"], window)
    candidate = teleprompters.load_state(spec, compiled["state"])
    field = spec.config.metric.field or spec.output_fields[0]
    metric, method = metrics.window_metric(spec, table)
    lm = teleprompt.lm(context.run_id, build_lm)
    gateway = gateway_of(lm)
    start, sides = gateway.stats(), []  # sides: what the baseline's answers cost
    with lm_stage(lm, f"{t.program}: evaluation stopped, nothing registered") as spent:
        scores = scoring.score_pair(baseline, candidate, holdout, metric, lm, field, concurrency=teleprompt.project().lm.concurrency,
                                     between=lambda: sides.append(gateway.stats() - start),
                                     progress=lambda side, done, total: context.log.info(f"evaluating {t.program}: {side} {done}/{total} held-out examples"))
    baseline_reused = sides[0].reused if sides else 0
    result = deltaone.compare(scores)
    grouping = report.for_program(spec, holdout, scores)
    ab = report.markdown(result, scores, grouping, report.inputs_of(spec, holdout))
    today = {"baseline": result.baseline_mean, "candidate": result.candidate_mean, "delta_ppm": result.delta_ppm, "deltaone": result.deltaone,
             "holdout": result.n, "lm_calls": spent.calls, "answers_reused": spent.reused}
    days = program_days(context.instance, t, today, compiled["usage"])
    summary = history.markdown(t.program, days)
    mlflow.log_text(history.html_page(t.program, days), f"{t.program}/history.html")  # renders in MLflow's artifact viewer
    settings = teleprompt.settings()
    run = mlflow.active_run().info  # dagster-mlflow leaves mlflow_run_id unset in the step that started the run
    links = {"mlflow_run": settings.mlflow_run_url(run.experiment_id, run.run_id),
             "production_traces": settings.experiment_traces_url(teleprompt.experiment_id(teleprompt.client(), spec.config.experiment))}
    track(mlflow, t, metrics={"baseline_score": result.baseline_mean, "candidate_score": result.candidate_mean, "delta_ppm": result.delta_ppm,
                              "ci_low_ppm": result.ci_low_ppm, "holdout": result.n, "deltaone": int(result.deltaone),
                              "eval_lm_calls": spent.calls, "eval_answers_reused": spent.reused})
    value = {"baseline_version": baseline_version, "evaluation_method": method, "comparison": result.to_dict(), "scores": [s.__dict__ for s in scores], "ab_report": ab,
             "lm": spent.as_metadata()}
    per_program = {f"{t.program}.{name}": v for name, v in (("baseline_score", result.baseline_mean), ("candidate_score", result.candidate_mean),
                                                            ("delta_ppm", result.delta_ppm), ("deltaone", int(result.deltaone)))}
    return staged(key, value, {
        "summary": summary, **links, **per_program,
        "ab_report": ab, "ab_report_by": grouping.by, "evaluation_method": method,
        "holdout": result.n, "baseline_version": baseline_version, "baseline_score": result.baseline_mean,
        "candidate_score": result.candidate_mean, "delta_ppm": result.delta_ppm, "ci_low_ppm": result.ci_low_ppm,
        "deltaone": result.deltaone, "significant": result.significant, "wins": result.wins, "losses": result.losses,
        "answers_reused": spent.reused, "baseline_answers_reused": baseline_reused, "candidate_answers_reused": spent.reused - baseline_reused,
        "lm_calls": spent.calls, "lm_retries": spent.retries, "lm_throttled": spent.throttled,
    }, markdown=("summary", "ab_report"), as_json=("evaluation_method",), urls=tuple(links))


def _latest_by_day(instance: dg.DagsterInstance, asset: str, program: str, limit: int) -> dict[str, dict]:
    """The latest materialization metadata of ``asset`` per day, for one program."""
    found: dict[str, dict] = {}
    for record in instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset)), limit=limit).records:
        mat = record.asset_materialization
        if mat is None or mat.partition is None:
            continue
        other = target_of(str(mat.partition))
        if other.program == program and other.day not in found:
            found[other.day] = {k: v.value for k, v in mat.metadata.items()}
    return found


def program_days(instance: dg.DagsterInstance, t: Target, today: dict, compile_usage: dict, limit: int = 60) -> list[history.Day]:
    """This program's evaluations, from the materializations Dagster keeps (latest per day), then
    today's, each with the day's quarantine rate, compile cost and largest reward share beside it.
    Each asset's records are read once."""
    evaluations = _latest_by_day(instance, "evaluation_report", t.program, limit * 4)
    curated = _latest_by_day(instance, "curated_traces", t.program, limit * 8)
    compiled = _latest_by_day(instance, "compiled_program", t.program, limit * 4) | {t.day: compile_usage}
    rewards = _latest_by_day(instance, "contributor_rewards", t.program, limit * 4)
    days = []
    for day, meta in evaluations.items():
        if day >= t.day or "baseline_score" not in meta:
            continue  # today is added below; a skipped day evaluated nothing
        days.append(history.Day(day, float(meta["baseline_score"]), float(meta["candidate_score"]), int(meta["delta_ppm"]), bool(meta["deltaone"]),
                                int(meta["holdout"]), lm_calls=meta.get("lm_calls"), answers_reused=meta.get("answers_reused"),
                                **extras(day, curated, compiled, rewards, t.program)))
    days = sorted(days, key=lambda d: d.day)[-(limit - 1):]
    return [*days, history.Day(t.day, **today, **extras(t.day, curated, compiled, {}, t.program))]


def extras(day: str, curated: dict, compiled: dict, rewards: dict, program: str) -> dict:
    return {"quarantine_rate": curated.get(day, {}).get("quarantine_rate"), "compile_lm_calls": compiled.get(day, {}).get("lm_calls"),
            "projected_usd": compiled.get(day, {}).get("projected_usd"), "top_share_ppm": rewards.get(day, {}).get(f"{program}.top_share_ppm")}


def build_evaluation_report(partitions: dg.PartitionsDefinition, group: str) -> dg.AssetsDefinition:
    return per_program_asset("evaluation_report", evaluate_program, collector("evaluation_report"), partitions=partitions, group=group, kinds={"dspy"},
                             description="Baseline (champion, else uncompiled) vs candidate on the same holdout; DeltaOne decided exactly. One step per program.")
