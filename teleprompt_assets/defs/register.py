"""``registered_version`` and ``champion_alias``: the candidate as an MLflow model version with its
lineage, and the ``champion`` alias moved when the promotion rules allow (register/promotion.py)."""

import dagster as dg

from teleprompt_assets.core import tracking
from teleprompt_assets.defs.checks import Verdict, combined_check
from teleprompt_assets.defs.io import ByPartition
from teleprompt_assets.defs.optimize import SKIPPED
from teleprompt_assets.defs.partitions import targets, window_label
from teleprompt_assets.defs.resources import TelepromptResource
from teleprompt_assets.defs.run_tracking import Tracking, link_run
from teleprompt_assets.optimize.teleprompters import load_state
from teleprompt_assets.register import lineage, registry
from teleprompt_assets.reward import attribution
from teleprompt_assets.training import datasets

# Steps that write the model registry and the outbox share this Dagster concurrency pool. Give it a
# limit of 1 (`dagster instance concurrency set teleprompt_registry 1`, or `concurrency: pools:
# default_limit: 1` in dagster.yaml) and concurrent runs take turns there; registry.register's lock
# guards the same ground without it.
REGISTRY_POOL = "teleprompt_registry"


def build_registered_version(partitions: dg.PartitionsDefinition, group: str, window_days: int) -> dg.AssetsDefinition:
    @dg.asset(
        partitions_def=partitions, group_name=group, pool=REGISTRY_POOL, kinds={"mlflow"},
        check_specs=[dg.AssetCheckSpec("no_regression", asset="registered_version", blocking=False,
                                       description="warns when a candidate scores below its baseline (C < B): registered, never promoted; a result, not a failure")],
    )
    def registered_version(context: dg.AssetExecutionContext, teleprompt: TelepromptResource, mlflow: Tracking,
                           training_set: ByPartition, compiled_program: ByPartition, evaluation_report: ByPartition):
        """The candidate as an MLflow model version with lineage (registered whatever its score)."""
        settings, client = teleprompt.settings(), teleprompt.client()
        experiment = teleprompt.experiment_id(client, settings.pipeline_experiment)
        out, verdicts, described = ByPartition(), [], set()
        link_run(mlflow, settings, context.run.run_id)
        for t in targets(context):
            spec, compiled, evaluation, table = teleprompt.spec(t.program), compiled_program[t.key], evaluation_report[t.key], training_set[t.key]
            if SKIPPED in compiled:
                out[t.key] = {"name": spec.registered_model_name, SKIPPED: compiled[SKIPPED]}
                context.add_asset_metadata({"model": spec.registered_model_name, SKIPPED: compiled[SKIPPED]}, partition_key=t.key)
                verdicts.append(Verdict(t, True, {SKIPPED: compiled[SKIPPED]}))
                continue
            window = window_label(t.day, window_days)
            data_hash = datasets.dataset_hash(table)
            tags = lineage.version_tags(spec, t.key, data_hash, context.run.run_id, compiled, evaluation, settings=settings)
            contributors = attribution.contributor_summary(compiled["data_traces"], compiled["demos"])
            artifacts = lineage.version_artifacts(evaluation, datasets.sample_input(table, spec), contributors, compiled.get("trial_log", ""))
            version = registry.register(client, spec, load_state(spec, compiled["state"]), compiled["state"], window, experiment, tags, artifacts,
                                        lock_dir=settings.home / "locks", params=lineage.version_params(spec, t.key, data_hash, compiled, evaluation),
                                        metrics=lineage.version_metrics(evaluation["comparison"], compiled),
                                        description=lineage.version_description(spec, window, evaluation, context.run.run_id, settings, compiled))
            described.add(spec.config.experiment)
            out[t.key] = {"name": version.name, "version": version.version, "run_id": version.run_id, "program_hash": version.program_hash,
                          "created": version.created, "window": window}
            context.add_asset_metadata({
                "model": version.name, "version": version.version, "created": version.created,
                "mlflow": dg.MetadataValue.url(settings.model_version_url(version.name, version.version)),
                "mlflow_run": dg.MetadataValue.url(settings.mlflow_run_url(client.get_run(version.run_id).info.experiment_id, version.run_id)),
            }, partition_key=t.key)
            comparison = evaluation["comparison"]
            problem = lineage.regression(comparison, version.version)
            verdicts.append(Verdict(t, problem is None, {"baseline_sum": comparison["baseline_sum"], "candidate_sum": comparison["candidate_sum"]}, problem))
        # the production experiments the versions learned from say which programs' traces they hold
        programs = teleprompt.project().programs
        for name in sorted(described):
            tracking.experiment_id(client, settings, name, programs=[p for p, c in programs.items() if c.experiment == name])
        yield dg.Output(out)
        # A candidate that loses to the champion is an outcome the run reports, not a failure: the check
        # warns, champion_alias refuses it per program (registry.promote_if_better, C > B) and the
        # attestation needs DeltaOne, so nothing downstream can serve or attest it.
        yield combined_check("no_regression", "registered_version", verdicts, partial=dg.AssetCheckSeverity.WARN, failed=dg.AssetCheckSeverity.WARN)

    return registered_version


def build_champion_alias(partitions: dg.PartitionsDefinition, group: str) -> dg.AssetsDefinition:
    @dg.asset(partitions_def=partitions, group_name=group, pool=REGISTRY_POOL, kinds={"mlflow"})
    def champion_alias(context: dg.AssetExecutionContext, teleprompt: TelepromptResource, registered_version: ByPartition, evaluation_report: ByPartition) -> ByPartition:
        """The `champion` alias (the serving version), moved to the new version when the promotion rules allow."""
        client = teleprompt.client()
        out = ByPartition()
        for t in targets(context):
            evaluation, registered = evaluation_report[t.key], registered_version[t.key]
            name, version = registered["name"], registered.get("version")
            if SKIPPED in registered:
                promoted, decision = False, registered[SKIPPED]
            else:
                comparison = evaluation["comparison"]
                spec = teleprompt.spec(t.program)
                promoted, decision = registry.promote_if_better(client, name, version, evaluation["baseline_version"], comparison["baseline_sum"],
                                                                comparison["candidate_sum"], comparison["n"], spec.config.split.min_holdout,
                                                                teleprompt.settings().home / "locks", ci_low_ppm=comparison.get("ci_low_ppm"),
                                                                require_significance=spec.config.promotion.require_significance)
            current = registry.champion(client, name)
            serving = int(current.version) if current is not None else None
            context.add_asset_metadata({"champion_version": serving, "promoted": promoted, "decision": decision}, partition_key=t.key)
            out[t.key] = {"name": name, "version": version, "champion": version is not None and serving == version, "champion_version": serving, "decision": decision}
        return out

    return champion_alias
