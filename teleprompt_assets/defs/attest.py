"""``deltaone_attestation``: a signed EAS off-chain attestation when DeltaOne holds on enough
evidence, with its bundle in the outbox and on the version's MLflow run; otherwise the reason."""

import json

import dagster as dg
import polars as pl

from teleprompt_assets.attest import bundles, evidence, share
from teleprompt_assets.attest.keys import load_attester
from teleprompt_assets.defs.io import ByPartition
from teleprompt_assets.defs.optimize import SKIPPED
from teleprompt_assets.defs.partitions import Target, targets
from teleprompt_assets.defs.register import REGISTRY_POOL
from teleprompt_assets.defs.resources import TelepromptResource
from teleprompt_assets.defs.run_tracking import Tracking, track
from teleprompt_assets.register import registry


def build_deltaone_attestation(partitions: dg.PartitionsDefinition, group: str) -> dg.AssetsDefinition:
    @dg.asset(partitions_def=partitions, group_name=group, pool=REGISTRY_POOL, kinds={"ethereum"})
    def deltaone_attestation(context: dg.AssetExecutionContext, teleprompt: TelepromptResource, mlflow: Tracking, compiled_program: ByPartition,
                             evaluation_report: ByPartition, registered_version: ByPartition, contributor_rewards: ByPartition) -> ByPartition:
        """A signed EAS off-chain attestation when DeltaOne holds with significance; otherwise the reason it was skipped."""
        out = ByPartition()
        for t in targets(context):
            out[t.key] = result = attest(teleprompt, mlflow, t, compiled_program[t.key], evaluation_report[t.key], registered_version[t.key], contributor_rewards[t.key])
            shown = {k: result[k] for k in ("attested", "reason", "uid", "attester", "verifies") if k in result}
            shown["summary"] = dg.MetadataValue.md(f"**{t.program}** {t.day}: " + (f"✅ DeltaOne attested, uid `{result['uid']}`" if result.get("attested")
                                                                                 else f"❌ not attested: {result.get('reason', 'no DeltaOne')}"))
            if result.get("attested"):
                shown |= {"dev_key": result["dev_key"], "bundle": dg.MetadataValue.path(result["bundle"]), "explorer": dg.MetadataValue.url(result["share_url"])}
            context.add_asset_metadata(shown, partition_key=t.key)
        return out

    return deltaone_attestation


def attest(teleprompt: TelepromptResource, mlflow: Tracking, t: Target, compiled: dict, evaluation: dict, registered: dict, rewards: pl.DataFrame) -> dict:
    """Build, check, publish and record one attestation. Staged and verified outside the outbox,
    published by one rename, then recorded on the version: a crash at any point leaves no partial
    bundle, and no attestation_uid tag without its bundle."""
    if SKIPPED in compiled:
        return {"attested": False, "reason": compiled[SKIPPED]}
    reason = evidence.refusal(evidence.comparison_of(evaluation), teleprompt.spec(t.program).config.split.min_holdout)
    if reason:
        return {"attested": False, "reason": reason}
    settings, client = teleprompt.settings(), teleprompt.client()
    attester = load_attester(settings.home)
    ref_uid = registry.previous_attestation(client, registered["name"], registered["version"])
    files = bundles.build_bundle(evidence.evidence_of(t.program, t.day, registered["version"], compiled, evaluation, rewards.iter_rows(named=True), ref_uid),
                                 attester.private_key())
    uid = bundles.attestation_uid(files)
    staged = bundles.stage_bundle(files, settings.home / "staging", uid)
    problems = bundles.verify_bundle(staged, expected_signer=attester.address)
    if problems:
        raise dg.Failure(description=f"the bundle built for {uid} does not verify, so it was not published: {'; '.join(problems)}", allow_retries=False)
    folder = bundles.publish_bundle(staged, settings.outbox / t.program / uid)
    signer = bundles.package_attester(files)  # the address the bundle names and its signature backs
    registry.record_reward_components(client, registered["run_id"], rewards.to_dicts())
    registry.record_attestation(client, registered["name"], registered["version"], registered["run_id"], folder, uid, signer)
    track(mlflow, t, tags={"attestation_uid": uid})
    return {"attested": True, "uid": uid, "bundle": str(folder), "attester": signer, "dev_key": attester.is_dev,
            "verifies": True, "problems": [], "share_url": share.share_url(json.loads(files["attestation.json"]), attester.address)}
