"""``training_set``: the last ``window_days`` of curated traces, one row per distinct input, split
per label by first-seen time (``training/datasets.py``). Days of the window no run has curated are
ingested and curated here first."""

import dagster as dg
import polars as pl

from teleprompt_assets.curate.quality import ACCEPTED_SCHEMA
from teleprompt_assets.defs.curate import curate_target, curated_metadata, quarantined_metadata
from teleprompt_assets.defs.ingest import read_metadata
from teleprompt_assets.defs.io import ByPartition, TableIOManager
from teleprompt_assets.defs.partitions import Target, key_of, target_of, targets, window_days_of, window_label, window_mapping, window_of
from teleprompt_assets.defs.resources import TelepromptResource
from teleprompt_assets.defs.run_tracking import Tracking, track
from teleprompt_assets.ingest import traces
from teleprompt_assets.training import datasets, label_noise


def build_training_set(partitions: dg.PartitionsDefinition, group: str, window_days: int) -> dg.AssetsDefinition:
    @dg.asset(
        partitions_def=partitions, group_name=group, kinds={"polars"},
        description=f"The last {window_days} days of curated traces, one row per distinct input, split train / dev / holdout per label by first-seen time.",
        ins={"curated_traces": dg.AssetIn(partition_mapping=window_mapping(window_days), metadata={"allow_missing_partitions": True})},
    )
    def training_set(context: dg.AssetExecutionContext, teleprompt: TelepromptResource, mlflow: Tracking, io_manager: dg.ResourceParam[TableIOManager],
                     curated_traces: ByPartition) -> ByPartition:
        """Before reading its window, ingests and curates the window's days that were never curated
        (a first run, a gap, a day skipped by an earlier run), so no run trains on part of its window."""
        quality = teleprompt.project().quality
        sampling = quality.sampling
        out = ByPartition()
        for t in targets(context):
            filled = fill_window(context, teleprompt, io_manager, t, window_days, curated_traces)
            parts = [p for p in window_of(curated_traces | filled, t, window_days) if isinstance(p, pl.DataFrame)]
            curated = pl.concat(parts, how="vertical_relaxed") if parts else pl.DataFrame(schema=ACCEPTED_SCHEMA)
            spec = teleprompt.spec(t.program)
            whole, checked = datasets.window_table(curated, spec, near=quality.dedupe_near)
            out[t.key] = table = datasets.sample_train(whole, sampling, traces.day_bounds_ms(t.day)[1])
            usable = label_noise.credible(table)  # what each split gives the optimizer and the evaluation
            counts = dict(usable.group_by("split").len().iter_rows()) if len(usable) else {}
            dataset_hash = datasets.dataset_hash(table)
            context.add_asset_metadata({
                "window": window_label(t.day, window_days), "rows": len(table), "duplicates_removed": len(curated) - len(whole),
                "likely_mislabeled": checked.flagged, "label_check": checked.summary, "mislabeled": dg.MetadataValue.md(label_noise.markdown(whole)),
                "sampling": sampling.strategy, "sampled_out": len(whole) - len(table),
                **{f"{s}_rows": counts.get(s, 0) for s in datasets.SPLITS},
                "dataset_hash": dataset_hash, "days_filled": len(filled),
            }, partition_key=t.key)
            track(mlflow, t, tags={"window": window_label(t.day, window_days), "dataset_hash": dataset_hash},
                  metrics={f"{s}_rows": counts.get(s, 0) for s in datasets.SPLITS})
        return out

    return training_set


def fill_window(context: dg.AssetExecutionContext, teleprompt: TelepromptResource, io: TableIOManager, t: Target, window_days: int,
                loaded: ByPartition) -> ByPartition:
    """The days of ``t``'s window missing from ``loaded`` (the step's input). A day another run
    curated since this step started is read from storage; a day never curated is ingested and
    curated here, stored and recorded as materializations of raw_traces, curated_traces and
    quarantined_traces (partitions this run does not target, so Dagster would otherwise leave them
    out and the window would be silently short). Returns the curated tables by partition key."""
    first = teleprompt.project().start_date.isoformat()
    have = context.instance.get_materialized_partitions(dg.AssetKey("curated_traces"))
    filled, missing = ByPartition(), []
    for key in (key_of(t.program, d) for d in window_days_of(t.day, window_days) if d >= first):
        if key in loaded:
            continue
        stored = io.load(dg.AssetKey("curated_traces"), key) if key in have else None
        if stored is not None:
            filled[key] = stored
        else:
            missing.append(key)
    if not missing:
        return filled
    client = teleprompt.client()
    spec = teleprompt.spec(t.program)
    experiment = teleprompt.experiment_id(client, spec.config.experiment)
    for key in missing:
        target = target_of(key)
        day = curate_target(teleprompt, target, traces.read_day(client, experiment, target.day))
        if not day.reconciles:
            raise dg.Failure(description=f"{key}: read {day.raw.height} != accepted {day.accepted.height} + quarantined {day.quarantined.height}", allow_retries=False)
        note = {"filled_for": t.key}
        for asset, value, metadata in (("raw_traces", day.raw, read_metadata(day.raw.height, spec.config.experiment)),
                                       ("quarantined_traces", day.quarantined, quarantined_metadata(day, target.program)),
                                       ("curated_traces", day.accepted, curated_metadata(day, target.program) | day.counts)):
            io.store(dg.AssetKey(asset), key, value)
            context.log_event(dg.AssetMaterialization(asset_key=asset, partition=key, metadata=metadata | note))
        filled[key] = day.accepted
    context.log.info(f"{t.program}: ingested and curated {len(missing)} day(s) of the window that were never curated: {', '.join(target_of(k).day for k in missing)}")
    return filled
