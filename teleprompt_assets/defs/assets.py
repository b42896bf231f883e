"""The asset graph (DESIGN §1), per program × day. Each asset calls one core stage and reports it.

A step materializes every program × day of its run (``partitions.targets``), one after another; the
LM-bound assets (``compiled_program``, ``evaluation_report``, ``contributor_rewards``) fan out one
step per program instead (``defs/fanout.py``), so a run's programs go through them side by side.
"""


import json
import time
from datetime import date, datetime, timedelta, timezone
from datetime import time as dtime
from typing import NamedTuple

import dagster as dg
import polars as pl

from teleprompt_assets.attest import bundles
from teleprompt_assets.reward import attribution
from teleprompt_assets.training import datasets
from teleprompt_assets.evaluate import deltaone
from teleprompt_assets.optimize import teleprompters
from teleprompt_assets.curate import quality
from teleprompt_assets.register import registry
from teleprompt_assets.attest import share
from teleprompt_assets.ingest import traces
from teleprompt_assets.defs.checks import Verdict, combined_check
from teleprompt_assets.defs.optimize import SKIPPED, build_compiled_program
from teleprompt_assets.defs.evaluate import build_evaluation_report
from teleprompt_assets.defs.io import ByPartition, LocalTableIOManager
from teleprompt_assets.defs.partitions import (
    Target,
    key_of,
    target_of,
    targets,
    window_days_of,
    window_label,
    window_mapping,
    window_of,
)
from teleprompt_assets.defs.resources import TelepromptResource
from teleprompt_assets.defs.reward import build_contributor_rewards
from teleprompt_assets.defs.run_tracking import Tracking, track
from teleprompt_assets.attest.keys import load_attester
from teleprompt_assets.core.config import QualityConfig

GROUP = "teleprompt"
MLFLOW_UI = "http://127.0.0.1:5000"
# Steps that write the model registry and the outbox share this Dagster concurrency pool. Give it a
# limit of 1 (`dagster instance concurrency set teleprompt_registry 1`, or `concurrency: pools:
# default_limit: 1` in dagster.yaml) and concurrent runs take turns there; registry.register's lock
# guards the same ground without it.
REGISTRY_POOL = "teleprompt_registry"


def build_assets(partitions: dg.PartitionsDefinition, window_days: int) -> list:
    @dg.asset(partitions_def=partitions, group_name=GROUP, kinds={"mlflow", "polars"})
    def raw_traces(context: dg.AssetExecutionContext, teleprompt: TelepromptResource, mlflow: Tracking) -> ByPartition:
        """One day of a program's production traces, as MLflow holds them."""
        client = teleprompt.client()
        out = ByPartition()
        for t in targets(context):
            spec = teleprompt.spec(t.program)
            out[t.key] = table = traces.read_day(client, teleprompt.experiment_id(client, spec.config.experiment), t.day)
            context.add_asset_metadata({"traces_read": len(table), "experiment": spec.config.experiment}, partition_key=t.key)
            track(mlflow, t, tags={"partition_date": t.day}, metrics={"traces_read": len(table)})
        return out

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
    def curate(context: dg.AssetExecutionContext, teleprompt: TelepromptResource, mlflow: Tracking, raw_traces: ByPartition):
        accepted_out, rejected_out, checks = ByPartition(), ByPartition(), []
        for t in targets(context):
            day = _curate_day(teleprompt, t, raw_traces[t.key])
            accepted_out[t.key], rejected_out[t.key] = day.accepted, day.quarantined
            track(mlflow, t, metrics={"traces_accepted": len(day.accepted), "traces_quarantined": len(day.quarantined), "quarantine_rate": day.rate})
            context.add_asset_metadata(day.curated_metadata, asset_key="curated_traces", partition_key=t.key)
            context.add_asset_metadata(day.quarantined_metadata, asset_key="quarantined_traces", partition_key=t.key)
            checks.append(Verdict(t, day.reconciles, day.counts))
        yield dg.Output(accepted_out, "curated_traces")
        yield dg.Output(rejected_out, "quarantined_traces")
        yield combined_check("counts_reconcile", "curated_traces", checks)

    @dg.asset(
        partitions_def=partitions, group_name=GROUP, kinds={"polars"},
        description=f"The last {window_days} days of curated traces, deduplicated and split train / dev / holdout by a hash of the inputs.",
        ins={"curated_traces": dg.AssetIn(partition_mapping=window_mapping(window_days), metadata={"allow_missing_partitions": True})},
    )
    def training_set(context: dg.AssetExecutionContext, teleprompt: TelepromptResource, mlflow: Tracking, io_manager: dg.ResourceParam[LocalTableIOManager],
                     curated_traces: ByPartition) -> ByPartition:
        """Before reading its window, ingests and curates the window's days that were never curated
        (a first run, a gap, a day skipped by an earlier run), so no run trains on part of its window."""
        sampling = QualityConfig.model_validate(teleprompt.project().quality).sampling
        out = ByPartition()
        for t in targets(context):
            filled = _fill_window(context, teleprompt, io_manager, t, window_days)
            parts = [p for p in window_of(curated_traces | filled, t, window_days) if isinstance(p, pl.DataFrame)]
            curated = pl.concat(parts, how="vertical_relaxed") if parts else pl.DataFrame(schema=quality.ACCEPTED_SCHEMA)
            whole = datasets.training_table(curated, teleprompt.spec(t.program))
            out[t.key] = table = datasets.sample_train(whole, sampling, traces.day_bounds_ms(t.day)[1])
            counts = dict(table.group_by("split").len().iter_rows()) if len(table) else {}
            dataset_hash = _dataset_hash(table)
            context.add_asset_metadata({
                "window": window_label(t.day, window_days), "rows": len(table), "duplicates_removed": len(curated) - len(whole),
                "sampling": sampling.strategy, "sampled_out": len(whole) - len(table),
                **{f"{s}_rows": counts.get(s, 0) for s in datasets.SPLITS},
                "dataset_hash": dataset_hash, "days_filled": len(filled),
            }, partition_key=t.key)
            track(mlflow, t, tags={"window": window_label(t.day, window_days), "dataset_hash": dataset_hash},
                   metrics={f"{s}_rows": counts.get(s, 0) for s in datasets.SPLITS})
        return out

    compiled_program = build_compiled_program(partitions, GROUP)

    evaluation_report = build_evaluation_report(partitions, GROUP)
    contributor_rewards = build_contributor_rewards(partitions, GROUP)

    @dg.asset(
        partitions_def=partitions, group_name=GROUP, pool=REGISTRY_POOL, kinds={"mlflow"},
        check_specs=[dg.AssetCheckSpec("no_regression", asset="registered_version", blocking=True,
                                       description="a candidate scoring below its baseline (C < B) stops here: registered, never promoted")],
    )
    def registered_version(context: dg.AssetExecutionContext, teleprompt: TelepromptResource, mlflow: Tracking,
                           training_set: ByPartition, compiled_program: ByPartition, evaluation_report: ByPartition):
        """The candidate as an MLflow model version with lineage (registered whatever its score)."""
        client = teleprompt.client()
        experiment = teleprompt.experiment_id(client, teleprompt.settings().pipeline_experiment)
        out, verdicts = ByPartition(), []
        for t in targets(context):
            spec, compiled, evaluation = teleprompt.spec(t.program), compiled_program[t.key], evaluation_report[t.key]
            if SKIPPED in compiled:
                out[t.key] = {"name": spec.registered_model_name, SKIPPED: compiled[SKIPPED]}
                context.add_asset_metadata({"model": spec.registered_model_name, SKIPPED: compiled[SKIPPED]}, partition_key=t.key)
                verdicts.append(Verdict(t, True, {SKIPPED: compiled[SKIPPED]}))
                continue
            comparison = evaluation["comparison"]
            window = window_label(t.day, window_days)
            tags = {
                "base_version": evaluation["baseline_version"], "partition": t.key, "dataset_hash": _dataset_hash(training_set[t.key]),
                "evaluation_method": evaluation["evaluation_method"]["kind"], "optimizer": spec.config.optimizer.name, "optimizer_config": json.dumps(spec.config.optimizer.params, sort_keys=True),
                "dagster_run_id": context.run.run_id, "baseline_score": comparison["baseline_sum"], "candidate_score": comparison["candidate_sum"],
                "eval_count": comparison["n"], "delta_ppm": comparison["delta_ppm"], "deltaone": comparison["deltaone"],
                "contributor_count": len({d["contributor"] for d in compiled["data_traces"]}),
            }
            artifacts = {
                "ab_report.md": evaluation["ab_report"],
                "evaluation.json": json.dumps({k: evaluation[k] for k in ("baseline_version", "evaluation_method", "comparison", "scores")}, indent=1, sort_keys=True),
                registry.SAMPLE_ARTIFACT: json.dumps(_sample_input(training_set[t.key], spec)),
                "contributors.json": json.dumps(attribution.contributor_summary(compiled["data_traces"], compiled["demos"]), indent=1),
            }
            version = registry.register(client, spec, teleprompters.load_state(spec, compiled["state"]), compiled["state"], window, experiment, tags, artifacts,
                                        lock_dir=teleprompt.settings().home / "locks")
            out[t.key] = {"name": version.name, "version": version.version, "run_id": version.run_id, "program_hash": version.program_hash,
                          "created": version.created, "window": window}
            context.add_asset_metadata({
                "model": version.name, "version": version.version, "created": version.created,
                "mlflow": dg.MetadataValue.url(f"{MLFLOW_UI}/#/models/{version.name}/versions/{version.version}"),
            }, partition_key=t.key)
            not_worse = comparison["candidate_sum"] >= comparison["baseline_sum"]
            verdicts.append(Verdict(t, not_worse, {"baseline_sum": comparison["baseline_sum"], "candidate_sum": comparison["candidate_sum"]},
                                    None if not_worse else f"C={comparison['candidate_sum']} < B={comparison['baseline_sum']}: v{version.version} is registered but kept out of serving"))
        yield dg.Output(out)
        # With several programs in the step, one regression must not hold back the others' promotion:
        # champion_alias applies the same rule per program (registry.promote_if_better).
        yield combined_check("no_regression", "registered_version", verdicts, partial=dg.AssetCheckSeverity.WARN)

    @dg.asset(partitions_def=partitions, group_name=GROUP, pool=REGISTRY_POOL, kinds={"mlflow"})
    def champion_alias(context: dg.AssetExecutionContext, teleprompt: TelepromptResource, registered_version: ByPartition, evaluation_report: ByPartition) -> ByPartition:
        """The `champion` alias (the serving version), moved to the new version behind the no_regression gate."""
        client = teleprompt.client()
        out = ByPartition()
        for t in targets(context):
            evaluation, registered = evaluation_report[t.key], registered_version[t.key]
            name = registered["name"]
            if SKIPPED in registered:
                current = registry.champion(client, name)
                serving = int(current.version) if current is not None else None
                context.add_asset_metadata({"champion_version": serving, "promoted": False, "decision": registered[SKIPPED]}, partition_key=t.key)
                out[t.key] = {"name": name, "version": None, "champion": False, "champion_version": serving, "decision": registered[SKIPPED]}
                continue
            comparison, version = evaluation["comparison"], registered["version"]
            promoted, decision = registry.promote_if_better(client, name, version, evaluation["baseline_version"], comparison["baseline_sum"], comparison["candidate_sum"],
                                                            comparison["n"], teleprompt.spec(t.program).config.split.min_holdout, teleprompt.settings().home / "locks")
            current = registry.champion(client, name)
            serving = int(current.version) if current is not None else None
            context.add_asset_metadata({"champion_version": serving, "promoted": promoted, "decision": decision}, partition_key=t.key)
            out[t.key] = {"name": name, "version": version, "champion": serving == version, "champion_version": serving, "decision": decision}
        return out

    @dg.asset(partitions_def=partitions, group_name=GROUP, pool=REGISTRY_POOL, kinds={"ethereum"})
    def deltaone_attestation(context: dg.AssetExecutionContext, teleprompt: TelepromptResource, mlflow: Tracking, compiled_program: ByPartition,
                             evaluation_report: ByPartition, registered_version: ByPartition, contributor_rewards: ByPartition) -> ByPartition:
        """A signed EAS off-chain attestation when DeltaOne holds with significance; otherwise the reason it was skipped."""
        out = ByPartition()
        for t in targets(context):
            out[t.key] = result = _attest(teleprompt, mlflow, t, compiled_program[t.key], evaluation_report[t.key], registered_version[t.key], contributor_rewards[t.key])
            shown = {k: result[k] for k in ("attested", "reason", "uid", "attester", "verifies") if k in result}
            if result.get("attested"):
                shown |= {"dev_key": result["dev_key"], "bundle": dg.MetadataValue.path(result["bundle"]), "explorer": dg.MetadataValue.url(result["share_url"])}
            context.add_asset_metadata(shown, partition_key=t.key)
        return out

    return [raw_traces, curate, training_set, compiled_program, evaluation_report, registered_version, champion_alias, contributor_rewards, deltaone_attestation]


def _attest(teleprompt: TelepromptResource, mlflow: Tracking, t: Target, compiled: dict, evaluation: dict, registered: dict, rewards: pl.DataFrame) -> dict:
    if SKIPPED in compiled:
        return {"attested": False, "reason": compiled[SKIPPED]}
    comparison = deltaone.Comparison(**{k: v for k, v in evaluation["comparison"].items() if k not in ("baseline_mean", "candidate_mean")})
    min_holdout = teleprompt.spec(t.program).config.split.min_holdout
    if comparison.n < min_holdout:
        return {"attested": False, "reason": f"evidence too small: {comparison.n} held-out examples, fewer than min_holdout={min_holdout}"}
    if not comparison.attestable:
        reason = "DeltaOne not reached" if not comparison.deltaone else f"confidence bound not above zero (ci_low_ppm={comparison.ci_low_ppm})"
        return {"attested": False, "reason": reason}
    settings = teleprompt.settings()
    client = teleprompt.client()
    attester = load_attester(settings.home)
    evidence = bundles.Evidence(
        program=t.program, model_version=registered["version"], baseline_version=evaluation["baseline_version"],
        program_state=compiled["state"],
        eval_leaves=[(s["example_hash"], s["baseline_q"], s["candidate_q"]) for s in evaluation["scores"]],
        data_leaves=[d["trace_hash"] for d in compiled["data_traces"]],
        reward_leaves=[(r["contributor"], r["weight_ppm"]) for r in rewards.iter_rows(named=True) if r["weight_ppm"] > 0],
        seed=comparison.seed, resamples=comparison.resamples, confidence_pct=comparison.confidence_pct,
        time=int(datetime.combine(date.fromisoformat(t.day) + timedelta(days=1), dtime(0), tzinfo=timezone.utc).timestamp()),
        ref_uid=registry.previous_attestation(client, registered["name"], registered["version"]) or bundles.ZERO_UID,
    )
    files = bundles.build_bundle(evidence, attester.private_key())
    uid = bundles.attestation_uid(files)
    # staged and checked outside the outbox, published by one rename, then recorded: a crash at any
    # point leaves no partial bundle, and no attestation_uid tag without its bundle
    staged = bundles.stage_bundle(files, settings.home / "staging", uid)
    problems = bundles.verify_bundle(staged, expected_signer=attester.address)
    if problems:
        raise dg.Failure(description=f"the bundle built for {uid} does not verify, so it was not published: {'; '.join(problems)}", allow_retries=False)
    folder = bundles.publish_bundle(staged, settings.outbox / t.program / uid)
    client.log_artifacts(registered["run_id"], str(folder), artifact_path="attestation")
    signer = bundles.package_attester(files)  # the address the bundle names and its signature backs
    client.set_model_version_tag(registered["name"], str(registered["version"]), "attester", signer)
    client.set_model_version_tag(registered["name"], str(registered["version"]), "attestation_uid", uid)
    url = share.share_url(json.loads(files["attestation.json"]), attester.address)
    track(mlflow, t, tags={"attestation_uid": uid})
    return {"attested": True, "uid": uid, "bundle": str(folder), "attester": signer, "dev_key": attester.is_dev,
            "verifies": not problems, "problems": problems, "share_url": url}


class CuratedDay(NamedTuple):
    raw: pl.DataFrame
    accepted: pl.DataFrame
    quarantined: pl.DataFrame

    @property
    def rate(self) -> float:
        return len(self.quarantined) / len(self.raw) if len(self.raw) else 0.0

    @property
    def reconciles(self) -> bool:
        return len(self.accepted) + len(self.quarantined) == len(self.raw)

    @property
    def counts(self) -> dict[str, int]:
        return {"read": len(self.raw), "accepted": len(self.accepted), "quarantined": len(self.quarantined)}

    @property
    def curated_metadata(self) -> dict:
        return {"accepted": len(self.accepted), "quarantine_rate": self.rate, "contributors": self.accepted["contributor"].n_unique()}

    @property
    def quarantined_metadata(self) -> dict:
        q = self.quarantined
        reasons = dict(q.group_by("reason").len().sort("reason").iter_rows()) if len(q) else {}
        return {"quarantined": len(q), "reasons": dg.MetadataValue.json(reasons)}


def _curate_day(teleprompt: TelepromptResource, t: Target, raw: pl.DataFrame) -> CuratedDay:
    rules = QualityConfig.model_validate(teleprompt.project().quality)
    result = quality.curate(raw, teleprompt.spec(t.program), rules, now_ms=int(time.time() * 1000))
    return CuratedDay(raw, result.accepted, result.quarantined)


def _fill_window(context: dg.AssetExecutionContext, teleprompt: TelepromptResource, io: LocalTableIOManager, t: Target, window_days: int) -> ByPartition:
    """Ingest and curate the days of ``t``'s window that have no ``curated_traces`` materialization,
    storing and recording them as materializations of raw_traces, curated_traces and
    quarantined_traces (partitions this run does not target, so Dagster would otherwise leave them
    out and the window would be silently short). Returns the curated tables by partition key."""
    first = teleprompt.project().start_date.isoformat()
    have = context.instance.get_materialized_partitions(dg.AssetKey("curated_traces"))
    missing = [key_of(t.program, d) for d in window_days_of(t.day, window_days) if d >= first and key_of(t.program, d) not in have]
    filled = ByPartition()
    if not missing:
        return filled
    client = teleprompt.client()
    spec = teleprompt.spec(t.program)
    experiment = teleprompt.experiment_id(client, spec.config.experiment)
    for key in missing:
        target = target_of(key)
        day = _curate_day(teleprompt, target, traces.read_day(client, experiment, target.day))
        if not day.reconciles:
            raise dg.Failure(description=f"{key}: read {len(day.raw)} != accepted {len(day.accepted)} + quarantined {len(day.quarantined)}", allow_retries=False)
        note = {"filled_for": t.key}
        for asset, value, metadata in (("raw_traces", day.raw, {"traces_read": len(day.raw), "experiment": spec.config.experiment}),
                                       ("quarantined_traces", day.quarantined, day.quarantined_metadata),
                                       ("curated_traces", day.accepted, day.curated_metadata | day.counts)):
            io.store(dg.AssetKey(asset), key, value)
            context.log_event(dg.AssetMaterialization(asset_key=asset, partition=key, metadata=metadata | note))
        filled[key] = day.accepted
    context.log.info(f"{t.program}: ingested and curated {len(missing)} day(s) of the window that were never curated: {', '.join(target_of(k).day for k in missing)}")
    return filled


def _sample_input(table: pl.DataFrame, spec) -> dict:
    """One held-out input, kept with the version so a rollback can check the version still runs."""
    rows = table.filter(pl.col("split") == "holdout").head(1)
    return {k: v for k, v in json.loads(rows["inputs"][0]).items() if k in spec.input_fields} if len(rows) else {f: "" for f in spec.input_fields}


def _dataset_hash(table: pl.DataFrame) -> str:
    """keccak256 over the sorted ``trace_hash:split`` lines: changes if any trace or its split does."""
    from eth_utils import keccak

    lines = sorted(f"{h}:{s}" for h, s in table.select("trace_hash", "split").iter_rows()) if len(table) else []
    return "0x" + keccak(text="\n".join(lines)).hex()
