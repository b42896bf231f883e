"""The asset graph (DESIGN §1), per program × day. Each asset calls one core stage and reports it."""


import json
import os
import time
from datetime import date, datetime, time as dtime, timedelta, timezone
from fractions import Fraction

import dagster as dg
import polars as pl
from dagster_mlflow.resources import MlFlow

from teleprompt_assets import attest, attribution, datasets, evaluate, impact, metrics, optimize, prompt_quality, quality, registry, report, share, traces, usage
from teleprompt_assets.defs.partitions import split_key, window_mapping
from teleprompt_assets.defs.resources import TelepromptResource
from teleprompt_assets.keys import load_attester
from teleprompt_assets.lm import build_lm

GROUP = "teleprompt"
Tracking = dg.ResourceParam[MlFlow]
MLFLOW_UI = "http://127.0.0.1:5000"
# Steps that write the model registry and the outbox share this Dagster concurrency pool. Give it a
# limit of 1 (`dagster instance concurrency set teleprompt_registry 1`, or `concurrency: pools:
# default_limit: 1` in dagster.yaml) and concurrent runs take turns there; registry.register's lock
# guards the same ground without it.
REGISTRY_POOL = "teleprompt_registry"


def _window(day: str, days: int) -> str:
    end = date.fromisoformat(day)
    return f"{(end - timedelta(days=days - 1)).isoformat()}..{day}"


def build_assets(partitions: dg.PartitionsDefinition, window_days: int) -> list:
    @dg.asset(partitions_def=partitions, group_name=GROUP, kinds={"mlflow", "polars"})
    def raw_traces(context: dg.AssetExecutionContext, teleprompt: TelepromptResource, mlflow: Tracking) -> pl.DataFrame:
        """One day of a program's production traces, as MLflow holds them."""
        program, day = split_key(context)
        client = teleprompt.client()
        spec = teleprompt.spec(program)
        table = traces.read_day(client, teleprompt.experiment_id(client, spec.config.experiment), day)
        context.add_output_metadata({"traces_read": len(table), "experiment": spec.config.experiment})
        _track(mlflow, params={"program": program, "partition_date": day}, metrics={"traces_read": len(table)})
        return table

    @dg.multi_asset(
        partitions_def=partitions,
        group_name=GROUP,
        ins={"raw_traces": dg.AssetIn()},
        outs={
            "curated_traces": dg.AssetOut(description="Traces that meet the trace contract, with their keccak256 trace_hash.", kinds={"polars"}),
            "quarantined_traces": dg.AssetOut(description="Traces that break the contract, each with a reason code.", kinds={"polars"}),
        },
        check_specs=[dg.AssetCheckSpec("counts_reconcile", asset="curated_traces", blocking=True, description="read = accepted + quarantined")],
    )
    def curate(context: dg.AssetExecutionContext, teleprompt: TelepromptResource, mlflow: Tracking, raw_traces: pl.DataFrame):
        program, _ = split_key(context)
        rules = quality.QualityConfig.model_validate(teleprompt.project().quality)
        result = quality.curate(raw_traces, teleprompt.spec(program), rules, now_ms=int(time.time() * 1000))
        accepted, rejected = result.accepted, result.quarantined
        reasons = dict(rejected.group_by("reason").len().sort("reason").iter_rows()) if len(rejected) else {}
        rate = len(rejected) / len(raw_traces) if len(raw_traces) else 0.0
        _track(mlflow, metrics={"traces_accepted": len(accepted), "traces_quarantined": len(rejected), "quarantine_rate": rate})
        yield dg.Output(accepted, "curated_traces", metadata={"accepted": len(accepted), "quarantine_rate": rate, "contributors": accepted["contributor"].n_unique()})
        yield dg.Output(rejected, "quarantined_traces", metadata={"quarantined": len(rejected), "reasons": dg.MetadataValue.json(reasons)})
        yield dg.AssetCheckResult(
            check_name="counts_reconcile", asset_key="curated_traces",
            passed=len(accepted) + len(rejected) == len(raw_traces),
            metadata={"read": len(raw_traces), "accepted": len(accepted), "quarantined": len(rejected)},
        )

    @dg.asset(
        partitions_def=partitions, group_name=GROUP, kinds={"polars"},
        description=f"The last {window_days} days of curated traces, deduplicated and split train / dev / holdout by a hash of the inputs.",
        ins={"curated_traces": dg.AssetIn(partition_mapping=window_mapping(window_days), metadata={"allow_missing_partitions": True})},
    )
    def training_set(context: dg.AssetExecutionContext, teleprompt: TelepromptResource, mlflow: Tracking, curated_traces: pl.DataFrame) -> pl.DataFrame:
        program, day = split_key(context)
        curated = curated_traces if isinstance(curated_traces, pl.DataFrame) else pl.DataFrame(schema=quality.ACCEPTED_SCHEMA)
        sampling = quality.QualityConfig.model_validate(teleprompt.project().quality).sampling
        whole = datasets.training_table(curated, teleprompt.spec(program))
        table = datasets.sample_train(whole, sampling, traces.day_bounds_ms(day)[1])
        counts = dict(table.group_by("split").len().iter_rows()) if len(table) else {}
        dataset_hash = _dataset_hash(table)
        context.add_output_metadata({
            "window": _window(day, window_days), "rows": len(table), "duplicates_removed": len(curated) - len(whole),
            "sampling": sampling.strategy, "sampled_out": len(whole) - len(table),
            **{f"{s}_rows": counts.get(s, 0) for s in datasets.SPLITS},
            "dataset_hash": dataset_hash,
        })
        _track(mlflow, params={"window": _window(day, window_days), "dataset_hash": dataset_hash},
               metrics={f"{s}_rows": counts.get(s, 0) for s in datasets.SPLITS})
        return table

    @dg.asset(
        partitions_def=partitions, group_name=GROUP, kinds={"dspy"},
        retry_policy=dg.RetryPolicy(max_retries=int(os.environ.get("TELEPROMPT_COMPILE_RETRIES", "2")),  # transient LM failures only
                                    delay=float(os.environ.get("TELEPROMPT_COMPILE_RETRY_DELAY_S", "5")), backoff=dg.Backoff.EXPONENTIAL),
        check_specs=[dg.AssetCheckSpec("prompt_quality", asset="compiled_program", blocking=True,
                                       description="demos complete, unique, from accepted training traces only; instructions present; prompt within budget")],
    )
    def compiled_program(context: dg.AssetExecutionContext, teleprompt: TelepromptResource, mlflow: Tracking, training_set: pl.DataFrame):
        """The program recompiled by its configured teleprompter on the window's train split."""
        program, _ = split_key(context)
        spec = teleprompt.spec(program)
        config = spec.config
        trainset = datasets.training_examples(training_set, spec)
        metric, method = metrics.window_metric(spec, training_set)
        teacher = None
        if config.optimizer.warm_start:
            champion = registry.load_champion(teleprompt.client(), spec)
            teacher = champion[0] if champion else None
        lm = build_lm()
        started = time.perf_counter()
        progress = usage.Progress(context.log.info, f"compiling {program} with {config.optimizer.name}")
        context.log.info(f"compiling {program} with {config.optimizer.name} on {len(trainset)} training examples")
        try:
            with usage.metered(lm, progress) as used, optimize.time_limit(config.optimizer.time_limit_s):
                result = optimize.compile_program(spec, trainset, metric, datasets.examples(training_set, spec, "dev"), teacher)
        except (optimize.CompileError, optimize.CompileTimeout) as exc:  # only a transient LM failure is worth the retry policy
            transient = isinstance(exc, optimize.CompileError) and exc.transient
            raise dg.Failure(description=f"compile failed, nothing registered: {exc}", allow_retries=transient,
                             metadata={"lm": lm.model, "transient": transient}) from exc
        seconds = time.perf_counter() - started
        context.log.info(f"{progress.summary()}: done, {len(result.demos)} demos")
        by_id = {ex.trace_id: ex for ex in trainset}
        demos = [{"predictor": d.predictor, "trace_id": d.trace_id, "augmented": d.augmented,
                  "trace_hash": getattr(by_id.get(d.trace_id), "trace_hash", None), "contributor": getattr(by_id.get(d.trace_id), "contributor", None)}
                 for d in result.demos]
        pool = [{"trace_id": t, "trace_hash": getattr(by_id.get(t), "trace_hash", None), "contributor": getattr(by_id.get(t), "contributor", None)}
                for t in result.pool]  # KNNFewShot: the traces its calls draw demos from
        check = prompt_quality.check_program(result.program, set(by_id), set(training_set.filter(pl.col("split") != "train")["trace_id"]), config.prompt_token_budget)
        prog_hash = registry.program_hash(result.state)
        figures = {"trainset_size": len(trainset), "demos": len(demos), "demo_pool": len(pool), "lm_calls": used.calls, "input_tokens": used.input_tokens,
                   "output_tokens": used.output_tokens, "compile_seconds": round(seconds, 3),
                   "projected_wall_s": round(used.projected_wall_s(config.cost), 1), "projected_usd": round(used.projected_usd(config.cost), 6)}
        _track(mlflow, params={"optimizer": config.optimizer.name, "optimizer_params": json.dumps(config.optimizer.params, sort_keys=True), "lm": lm.model,
                               "warm_start": teacher is not None}, metrics=figures)
        yield dg.Output(
            {"program": program, "state": result.state, "program_hash": prog_hash, "demos": demos, "demo_pool": pool, "optimizer": config.optimizer.model_dump(),
             "warm_start_from": None if teacher is None else "champion", "usage": figures, "metric": method,
             "data_traces": training_set.filter(pl.col("split") == "train").select("trace_id", "trace_hash", "contributor", "feedback").to_dicts()},
            metadata={"optimizer": config.optimizer.name, "program_hash": prog_hash, "lm": lm.model, **figures},
        )
        yield dg.AssetCheckResult(check_name="prompt_quality", passed=check.passed, metadata={
            "problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in check.problems) or "none"),
            **{f"prompt_tokens_{name}": n for name, n in check.prompt_tokens.items()}})

    @dg.asset(partitions_def=partitions, group_name=GROUP, kinds={"dspy"})
    def evaluation_report(context: dg.AssetExecutionContext, teleprompt: TelepromptResource, mlflow: Tracking, training_set: pl.DataFrame, compiled_program: dict) -> dict:
        """Baseline (champion, else uncompiled) vs candidate on the same holdout; DeltaOne decided exactly."""
        program, day = split_key(context)
        spec = teleprompt.spec(program)
        client = teleprompt.client()
        holdout = datasets.examples(training_set, spec, "holdout")
        baseline, baseline_version = registry.baseline_for(client, spec, compiled_program["program_hash"], _window(day, window_days))
        candidate = optimize.load_state(spec, compiled_program["state"])
        field = spec.config.metric.field or spec.output_fields[0]
        metric, method = metrics.window_metric(spec, training_set)
        scores = evaluate.score_pair(baseline, candidate, holdout, metric, build_lm(), field,
                                     progress=lambda done, total: context.log.info(f"evaluating {program}: {done}/{total} held-out examples"))
        result = evaluate.compare(scores)
        ab = report.markdown(result, scores, [str(ex.get(field, "")) for ex in holdout], [str(ex.get(spec.input_fields[0], "")) for ex in holdout])
        context.add_output_metadata({
            "ab_report": dg.MetadataValue.md(ab), "evaluation_method": dg.MetadataValue.json(method),
            "holdout": result.n, "baseline_version": baseline_version, "baseline_score": result.baseline_mean,
            "candidate_score": result.candidate_mean, "delta_ppm": result.delta_ppm, "ci_low_ppm": result.ci_low_ppm,
            "deltaone": result.deltaone, "significant": result.significant, "wins": result.wins, "losses": result.losses,
        })
        _track(mlflow, metrics={"baseline_score": result.baseline_mean, "candidate_score": result.candidate_mean, "delta_ppm": result.delta_ppm,
                                 "ci_low_ppm": result.ci_low_ppm, "holdout": result.n, "deltaone": int(result.deltaone)})
        return {"baseline_version": baseline_version, "evaluation_method": method, "comparison": result.to_dict(), "scores": [s.__dict__ for s in scores], "ab_report": ab}

    @dg.asset(
        partitions_def=partitions, group_name=GROUP, pool=REGISTRY_POOL, kinds={"mlflow"},
        check_specs=[dg.AssetCheckSpec("no_regression", asset="registered_version", blocking=True,
                                       description="a candidate scoring below its baseline (C < B) stops here: registered, never promoted")],
    )
    def registered_version(context: dg.AssetExecutionContext, teleprompt: TelepromptResource, mlflow: Tracking, training_set: pl.DataFrame, compiled_program: dict, evaluation_report: dict):
        """The candidate as an MLflow model version with lineage (registered whatever its score)."""
        program, day = split_key(context)
        spec = teleprompt.spec(program)
        client = teleprompt.client()
        comparison = evaluation_report["comparison"]
        window = _window(day, window_days)
        tags = {
            "base_version": evaluation_report["baseline_version"], "partition": context.partition_key, "dataset_hash": _dataset_hash(training_set),
            "evaluation_method": evaluation_report["evaluation_method"]["kind"], "optimizer": spec.config.optimizer.name, "optimizer_config": json.dumps(spec.config.optimizer.params, sort_keys=True),
            "dagster_run_id": context.run.run_id, "baseline_score": comparison["baseline_sum"], "candidate_score": comparison["candidate_sum"],
            "eval_count": comparison["n"], "delta_ppm": comparison["delta_ppm"], "deltaone": comparison["deltaone"],
            "contributor_count": len({t["contributor"] for t in compiled_program["data_traces"]}),
        }
        candidate = optimize.load_state(spec, compiled_program["state"])
        artifacts = {
            "ab_report.md": evaluation_report["ab_report"],
            "evaluation.json": json.dumps({k: evaluation_report[k] for k in ("baseline_version", "evaluation_method", "comparison", "scores")}, indent=1, sort_keys=True),
            registry.SAMPLE_ARTIFACT: json.dumps(_sample_input(training_set, spec)),
            "contributors.json": json.dumps(attribution.contributor_summary(compiled_program["data_traces"], compiled_program["demos"]), indent=1),
        }
        experiment = teleprompt.experiment_id(client, teleprompt.settings().pipeline_experiment)
        version = registry.register(client, spec, candidate, compiled_program["state"], window, experiment, tags, artifacts,
                                    lock_dir=teleprompt.settings().home / "locks")
        not_worse = comparison["candidate_sum"] >= comparison["baseline_sum"]
        out = {"name": version.name, "version": version.version, "run_id": version.run_id, "program_hash": version.program_hash,
               "created": version.created, "window": window}
        yield dg.Output(out, metadata={
            "model": version.name, "version": version.version, "created": version.created,
            "mlflow": dg.MetadataValue.url(f"{MLFLOW_UI}/#/models/{version.name}/versions/{version.version}"),
        })
        yield dg.AssetCheckResult(
            check_name="no_regression", passed=not_worse,
            description=None if not_worse else f"C={comparison['candidate_sum']} < B={comparison['baseline_sum']}: v{version.version} is registered but kept out of serving",
            metadata={"baseline_sum": comparison["baseline_sum"], "candidate_sum": comparison["candidate_sum"]},
        )

    @dg.asset(partitions_def=partitions, group_name=GROUP, pool=REGISTRY_POOL, kinds={"mlflow"})
    def champion_alias(context: dg.AssetExecutionContext, teleprompt: TelepromptResource, registered_version: dict, evaluation_report: dict) -> dict:
        """The `champion` alias (the serving version), moved to the new version behind the no_regression gate."""
        comparison = evaluation_report["comparison"]
        client = teleprompt.client()
        name, version = registered_version["name"], registered_version["version"]
        promoted, decision = registry.promote_if_not_worse(client, name, version, comparison["baseline_sum"], comparison["candidate_sum"], comparison["n"])
        current = registry.champion(client, name)
        serving = int(current.version) if current is not None else None
        context.add_output_metadata({"champion_version": serving, "promoted": promoted, "decision": decision})
        return {"name": name, "version": version, "champion": serving == version, "champion_version": serving, "decision": decision}

    @dg.asset(partitions_def=partitions, group_name=GROUP, kinds={"polars"})
    def contributor_rewards(context: dg.AssetExecutionContext, teleprompt: TelepromptResource, mlflow: Tracking,
                            training_set: pl.DataFrame, compiled_program: dict) -> pl.DataFrame:
        """Reward weights (ppm, summing to 1,000,000): volume, outcome quality and leave-one-out demo impact."""
        program, _ = split_key(context)
        spec = teleprompt.spec(program)
        config = teleprompt.project().rewards
        measured = impact.demo_impact(optimize.load_state(spec, compiled_program["state"]), datasets.examples(training_set, spec, "holdout"),
                                      metrics.window_metric(spec, training_set)[0], build_lm(), config.impact_budget)
        credit: dict[str, Fraction] = {}
        for (_, _, units), demo in zip(measured.credits, compiled_program["demos"], strict=True):
            if demo["contributor"]:
                credit[demo["contributor"]] = credit.get(demo["contributor"], Fraction(0)) + units
        rows = attribution.reward_weights(
            [(t["contributor"], t["feedback"]) for t in compiled_program["data_traces"]],
            [d["contributor"] for d in compiled_program["demos"] if d["contributor"]], credit, config,
        )
        table = pl.DataFrame([{"contributor": r.contributor, "traces": r.traces, "demos": r.demos, "impact": int(r.impact), "weight_ppm": r.weight_ppm} for r in rows],
                             schema={"contributor": pl.String, "traces": pl.Int64, "demos": pl.Int64, "impact": pl.Int64, "weight_ppm": pl.Int64})
        context.add_output_metadata({"contributors": len(table), "weight_sum_ppm": int(table["weight_ppm"].sum()) if len(table) else 0,
                                     "impact_method": f"{measured.method} on {measured.examples_used}/{measured.examples_total} holdout examples",
                                     "impact_lm_calls": measured.lm_calls, "weights": dg.MetadataValue.md(_markdown(table))})
        _track(mlflow, metrics={"contributors": len(table), "impact_lm_calls": measured.lm_calls})
        return table

    @dg.asset(partitions_def=partitions, group_name=GROUP, pool=REGISTRY_POOL, kinds={"ethereum"})
    def deltaone_attestation(context: dg.AssetExecutionContext, teleprompt: TelepromptResource, mlflow: Tracking, compiled_program: dict, evaluation_report: dict,
                             registered_version: dict, contributor_rewards: pl.DataFrame) -> dict:
        """A signed EAS off-chain attestation when DeltaOne holds with significance; otherwise the reason it was skipped."""
        program, day = split_key(context)
        comparison = evaluate.Comparison(**{k: v for k, v in evaluation_report["comparison"].items() if k not in ("baseline_mean", "candidate_mean")})
        if not comparison.attestable:
            reason = "DeltaOne not reached" if not comparison.deltaone else f"confidence bound not above zero (ci_low_ppm={comparison.ci_low_ppm})"
            context.add_output_metadata({"attested": False, "reason": reason})
            return {"attested": False, "reason": reason}
        settings = teleprompt.settings()
        client = teleprompt.client()
        attester = load_attester(settings.home)
        evidence = attest.Evidence(
            program=program, model_version=registered_version["version"], baseline_version=evaluation_report["baseline_version"],
            program_state=compiled_program["state"],
            eval_leaves=[(s["example_hash"], s["baseline_q"], s["candidate_q"]) for s in evaluation_report["scores"]],
            data_leaves=[t["trace_hash"] for t in compiled_program["data_traces"]],
            reward_leaves=[(r["contributor"], r["weight_ppm"]) for r in contributor_rewards.iter_rows(named=True) if r["weight_ppm"] > 0],
            seed=comparison.seed, resamples=comparison.resamples, confidence_pct=comparison.confidence_pct,
            time=int(datetime.combine(date.fromisoformat(day) + timedelta(days=1), dtime(0), tzinfo=timezone.utc).timestamp()),
            ref_uid=registry.previous_attestation(client, registered_version["name"], registered_version["version"]) or attest.ZERO_UID,
        )
        files = attest.build_bundle(evidence, attester.private_key())
        uid = attest.attestation_uid(files)
        # staged and checked outside the outbox, published by one rename, then recorded: a crash at any
        # point leaves no partial bundle, and no attestation_uid tag without its bundle
        staged = attest.stage_bundle(files, settings.home / "staging", uid)
        problems = attest.verify_bundle(staged, expected_signer=attester.address)
        if problems:
            raise dg.Failure(description=f"the bundle built for {uid} does not verify, so it was not published: {'; '.join(problems)}", allow_retries=False)
        folder = attest.publish_bundle(staged, settings.outbox / program / uid)
        client.log_artifacts(registered_version["run_id"], str(folder), artifact_path="attestation")
        client.set_model_version_tag(registered_version["name"], str(registered_version["version"]), "attestation_uid", uid)
        url = share.share_url(json.loads(files["attestation.json"]), attester.address)
        mlflow.set_tag("attestation_uid", uid)
        context.add_output_metadata({"attested": True, "uid": uid, "attester": attester.address, "dev_key": attester.is_dev,
                                     "bundle": dg.MetadataValue.path(str(folder)), "verifies": not problems,
                                     "explorer": dg.MetadataValue.url(url)})
        return {"attested": True, "uid": uid, "bundle": str(folder), "attester": attester.address, "verifies": not problems, "problems": problems, "share_url": url}

    return [raw_traces, curate, training_set, compiled_program, evaluation_report, registered_version, champion_alias, contributor_rewards, deltaone_attestation]


def _track(tracking: MlFlow, params: dict | None = None, metrics: dict | None = None) -> None:
    """Mirror a step's figures into the Dagster run's MLflow run (dagster-mlflow)."""
    if params:
        tracking.log_params({k: str(v)[:500] for k, v in params.items()})
    if metrics:
        tracking.log_metrics({k: float(v) for k, v in metrics.items()})


def _sample_input(table: pl.DataFrame, spec) -> dict:
    """One held-out input, kept with the version so a rollback can check the version still runs."""
    rows = table.filter(pl.col("split") == "holdout").head(1)
    return {k: v for k, v in json.loads(rows["inputs"][0]).items() if k in spec.input_fields} if len(rows) else {f: "" for f in spec.input_fields}


def _dataset_hash(table: pl.DataFrame) -> str:
    """keccak256 over the sorted ``trace_hash:split`` lines: changes if any trace or its split does."""
    from eth_utils import keccak

    lines = sorted(f"{h}:{s}" for h, s in table.select("trace_hash", "split").iter_rows()) if len(table) else []
    return "0x" + keccak(text="\n".join(lines)).hex()


def _markdown(table: pl.DataFrame) -> str:
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.iter_rows()]
    return "\n".join(lines)
