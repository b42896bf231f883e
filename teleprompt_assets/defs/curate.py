"""``curated_traces`` and ``quarantined_traces``: each day's traces accepted or quarantined with a
reason, behind the blocking ``counts_reconcile`` check (read = accepted + quarantined)."""

import time

import dagster as dg

from teleprompt_assets.curate.quality import CuratedDay, curate_day
from teleprompt_assets.defs.checks import Verdict, combined_check
from teleprompt_assets.defs.io import ByPartition
from teleprompt_assets.defs.partitions import Target, targets
from teleprompt_assets.defs.resources import TelepromptResource
from teleprompt_assets.defs.run_tracking import Tracking, track


def build_curate(partitions: dg.PartitionsDefinition, group: str) -> dg.AssetsDefinition:
    @dg.multi_asset(
        partitions_def=partitions,
        group_name=group,
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
            day = curate_target(teleprompt, t, raw_traces[t.key])
            accepted_out[t.key], rejected_out[t.key] = day.accepted, day.quarantined
            track(mlflow, t, metrics={"traces_accepted": day.accepted.height, "traces_quarantined": day.quarantined.height, "quarantine_rate": day.rate})
            context.add_asset_metadata(curated_metadata(day, t.program), asset_key="curated_traces", partition_key=t.key)
            context.add_asset_metadata(quarantined_metadata(day, t.program), asset_key="quarantined_traces", partition_key=t.key)
            checks.append(Verdict(t, day.reconciles, day.counts))
        yield dg.Output(accepted_out, "curated_traces")
        yield dg.Output(rejected_out, "quarantined_traces")
        yield combined_check("counts_reconcile", "curated_traces", checks)

    return curate


def curate_target(teleprompt: TelepromptResource, t: Target, raw) -> CuratedDay:
    project = teleprompt.project()
    trust = project.trust.policy(t.program) if project.trust else None
    return curate_day(raw, teleprompt.spec(t.program), project.quality, now_ms=int(time.time() * 1000), trust=trust)


def curated_metadata(day: CuratedDay, program: str) -> dict:
    """Also keyed by program, so the UI plots one series per program rather than one line through all.
    ``identity`` says what contributors, times and labels rest on (signatures, or store write access)."""
    return {"accepted": day.accepted.height, "quarantine_rate": day.rate, "contributors": day.accepted["contributor"].n_unique(),
            f"{program}.accepted": day.accepted.height, f"{program}.quarantine_rate": day.rate,
            "identity": day.trust, "identity_counts": dg.MetadataValue.json(day.identity)}


def quarantined_metadata(day: CuratedDay, program: str) -> dict:
    """The reasons as a table and as per-program rates (``<program>.rate.<reason>``)."""
    total = max(1, day.raw.height)
    return {"quarantined": day.quarantined.height, "reasons": dg.MetadataValue.json(day.reasons),
            **{f"{program}.rate.{reason}": round(n / total, 6) for reason, n in sorted(day.reasons.items())}}
