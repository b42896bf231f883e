"""``compiled_program``: each program of the run compiles in its own step (``defs/fanout.py``), and
``collect_compiled`` gathers them into the asset and its blocking ``prompt_quality`` check.
"""

import contextlib
import io
import json
import os
import time

import dagster as dg
import polars as pl

from teleprompt_assets.core import usage
from teleprompt_assets.core.lm import build_lm
from teleprompt_assets.defs.checks import Verdict, combined_check
from teleprompt_assets.defs.fanout import collect_into, programs_in_run, staged
from teleprompt_assets.defs.io import ByPartition
from teleprompt_assets.defs.partitions import target_of, window_label
from teleprompt_assets.defs.resources import TelepromptResource, budget_stop
from teleprompt_assets.defs.run_tracking import Tracking, track
from teleprompt_assets.optimize import prompt_quality, selection, teleprompters
from teleprompt_assets.register import registry
from teleprompt_assets.training import datasets, label_noise, metrics

ASSET = "compiled_program"
SKIPPED = "skipped"  # the one-line reason a program of the run had nothing to optimize; every later stage passes it on
CHECK = dg.AssetCheckSpec("prompt_quality", asset=ASSET, blocking=True,
                          description="demos complete, unique, from accepted training traces only; instructions present; prompt within budget")


def _retry_policy() -> dg.RetryPolicy:
    """Read when the definitions are built; applies to transient LM failures only (see ``allow_retries``)."""
    return dg.RetryPolicy(max_retries=int(os.environ.get("TELEPROMPT_COMPILE_RETRIES", "2")),
                          delay=float(os.environ.get("TELEPROMPT_COMPILE_RETRY_DELAY_S", "5")), backoff=dg.Backoff.EXPONENTIAL)


@dg.op
def compile_program(context: dg.OpExecutionContext, teleprompt: TelepromptResource, mlflow: Tracking, key: str, training_set: ByPartition) -> dict:
    """The program recompiled by its configured teleprompter on the window's train split."""
    t, table = target_of(key), training_set[key]
    spec = teleprompt.spec(t.program)
    config = spec.config
    trainset = datasets.training_examples(table, spec)
    if not trainset:
        reason = f"nothing to optimize: the window {window_label(t.day, teleprompt.project().window_days)} has no training examples; nothing compiled or registered"
        context.log.info(f"{t.program}: {reason}")
        return staged(key, {"program": t.program, SKIPPED: reason}, {SKIPPED: reason}) | {"check": {"passed": True, "problems": [], "prompt_tokens": {}}}
    window = selection.Window(trainset, datasets.examples(table, spec, "dev"), datasets.training_examples(table, spec, "dev"))
    metric, method = metrics.window_metric(spec, table)
    teacher = None
    if config.optimizer.warm_start:
        champion = registry.load_champion(teleprompt.client(), spec)
        teacher = champion[0] if champion else None
    lm = teleprompt.lm(context.run_id, build_lm)
    started = time.perf_counter()
    progress = usage.Progress(context.log.info, f"compiling {t.program} with {config.optimizer.name}")
    context.log.info(f"compiling {t.program} with {config.optimizer.name} on {len(trainset)} training and {len(window.dev)} dev examples")
    printed = io.StringIO()  # teleprompters print their progress: it belongs in the step's log, not the terminal
    trials: list[str] = []
    try:
        with usage.metered(lm, progress) as used, teleprompters.time_limit(config.optimizer.time_limit_s), contextlib.redirect_stdout(printed), \
                teleprompters.trial_log() as trials:
            optimized = selection.optimize(spec, window, metric, teacher, teleprompt.project().lm.concurrency)
        budget_stop(lm, f"{t.program}: compile stopped, nothing registered")
    except dg.Failure:
        raise
    except Exception as exc:
        budget_stop(lm, f"{t.program}: compile stopped, nothing registered")  # only a transient LM failure is worth the retry policy; anything else fails once, with its reason
        transient = not isinstance(exc, teleprompters.CompileTimeout) and teleprompters.is_transient(exc)  # a blown time limit is not retried
        reason = str(exc) if isinstance(exc, (teleprompters.CompileError, teleprompters.CompileTimeout)) else f"{type(exc).__name__}: {exc}"
        if transient:
            reason += f"; the LM ({lm.model}) did not answer after its retries: check that it is up (TELEPROMPT_LM, TELEPROMPT_LM_API_BASE) and run again"
        raise dg.Failure(description=f"{t.program}: compile failed, nothing registered: {reason}", allow_retries=transient,
                         metadata={"lm": lm.model, "transient": transient}) from exc
    finally:
        for line in [*printed.getvalue().splitlines(), *trials]:
            context.log.debug(f"{config.optimizer.name}: {line}")
    result = optimized.result
    seconds = time.perf_counter() - started
    if optimized.candidates:
        context.log.info(f"{t.program}: portfolio on {optimized.candidates[0].dev_count or len(window.dev)} dev examples:\n{selection.describe(optimized.candidates)}")
    context.log.info(f"{progress.summary()}: done, {len(result.demos)} demos")
    taught = [*trainset, *window.dev_taught] if "dev" in optimized.learned_from else trainset
    by_id = {ex.trace_id: ex for ex in [*taught, *window.dev]}
    demos = [{"predictor": d.predictor, "trace_id": d.trace_id, "augmented": d.augmented,
              "trace_hash": getattr(by_id.get(d.trace_id), "trace_hash", None), "contributor": getattr(by_id.get(d.trace_id), "contributor", None)}
             for d in result.demos]
    pool = [{"trace_id": i, "trace_hash": getattr(by_id.get(i), "trace_hash", None), "contributor": getattr(by_id.get(i), "contributor", None)}
            for i in result.pool]  # KNNFewShot: the traces its calls draw demos from
    check = prompt_quality.check_program(result.program, {ex.trace_id for ex in taught}, set(table.filter(pl.col("split") == "holdout")["trace_id"]),
                                         config.prompt_token_budget)
    prog_hash = registry.program_hash(result.state)
    figures = {"trainset_size": len(taught), "demos": len(demos), "demo_pool": len(pool), "lm_calls": used.calls, "lm_answers_reused": used.reused,
               "lm_retries": used.retries, "input_tokens": used.input_tokens,
               "output_tokens": used.output_tokens, "compile_seconds": round(seconds, 3),
               "projected_wall_s": round(used.projected_wall_s(config.cost), 1), "projected_usd": round(used.projected_usd(config.cost), 6)}
    chosen = optimized.optimizer.name
    portfolio = {f"dev_score.{c.optimizer}": c.dev_score for c in optimized.candidates if c.dev_score is not None}
    track(mlflow, t, tags={"optimizer": config.optimizer.name, "optimizer_chosen": chosen, "optimizer_params": json.dumps(config.optimizer.params, sort_keys=True),
                           "lm": lm.model, "warm_start": teacher is not None, "learned_from": "+".join(optimized.learned_from)}, metrics=figures | portfolio)
    data_splits = ("train", "dev")  # both fed the optimization: taught, or scored to choose
    compiled = {"program": t.program, "state": result.state, "program_hash": prog_hash, "demos": demos, "demo_pool": pool, "optimizer": config.optimizer.model_dump(),
                "optimizer_chosen": optimized.optimizer.model_dump(), "learned_from": list(optimized.learned_from),
                "trial_log": "\n".join([*printed.getvalue().splitlines(), *trials])[-200_000:],
                "candidates": [c.as_dict() for c in optimized.candidates],
                "warm_start_from": None if teacher is None else "champion", "usage": figures, "metric": method,
                "data_traces": label_noise.credible(table).filter(pl.col("split").is_in(data_splits)).select("trace_id", "trace_hash", "contributor", "feedback").to_dicts()}
    series = {f"{t.program}.{k}": figures[k] for k in ("lm_calls", "projected_usd", "demos")}  # one plotted series per program
    shortfalls = [line for c in result.coverage if (line := c.shortfall())]
    for line in shortfalls:
        context.log.warning(f"{t.program}: fewer demos than allowed: {line}")
    compiled["demo_coverage"] = [c.as_dict() for c in result.coverage]
    compiled["demo_shortfall"] = shortfalls
    selected = {"optimizer_chosen": chosen, "learned_from": "+".join(optimized.learned_from), **portfolio,
                "demos_by_predictor": _coverage_markdown(result.coverage), "demo_shortfall": "; ".join(shortfalls) or "none"}
    if optimized.candidates:
        selected["portfolio"] = selection.describe(optimized.candidates)
    return staged(key, compiled, {"optimizer": config.optimizer.name, "program_hash": prog_hash, "lm": lm.model, **selected, **figures, **series},
                  markdown=("demos_by_predictor",)) | {
        "check": {"passed": check.passed, "problems": check.problems, "prompt_tokens": check.prompt_tokens}}


def _coverage_markdown(coverage: list[teleprompters.DemoCoverage]) -> str:
    lines = ["| predictor | demos | allowed | bootstrapped | training examples with every field | missing in some |", "|---|---|---|---|---|---|"]
    return "\n".join(lines + [f"| {c.predictor} | {c.demos} | {c.limit if c.limit is not None else '-'} | {c.bootstrapped} | {c.complete} of {c.examples} | "
                               f"{', '.join(c.missing) or '-'} |" for c in coverage])


@dg.op(out={"result": dg.Out(), CHECK.get_python_identifier(): dg.Out()})
def collect_compiled(context: dg.AssetExecutionContext, compiled: list[dict]):
    """The run's compiled programs as the asset, and one prompt_quality verdict over them."""
    out, verdicts = collect_into(context, compiled), []
    for item in sorted(compiled, key=lambda c: c["key"]):
        check = item["check"]
        verdicts.append(Verdict(target_of(item["key"]), check["passed"], {
            "problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in check["problems"]) or "none"),
            **{f"prompt_tokens_{name}": n for name, n in check["prompt_tokens"].items()}}))
    yield dg.Output(out, "result")
    yield combined_check(CHECK.name, ASSET, verdicts)


def build_compiled_program(partitions: dg.PartitionsDefinition, group: str) -> dg.AssetsDefinition:
    retry = _retry_policy()

    @dg.graph_asset(name=ASSET, partitions_def=partitions, group_name=group, kinds={"dspy"}, check_specs=[CHECK],
                    description="The program recompiled by its configured teleprompter on the window's train split; one compile step per program.")
    def compiled_program(training_set):
        compile_one = compile_program.with_retry_policy(retry)
        return collect_compiled(programs_in_run(after=training_set).map(lambda key: compile_one(key, training_set)).collect())

    return compiled_program
