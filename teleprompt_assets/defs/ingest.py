"""``raw_traces``: one UTC day of each program's production traces, as MLflow holds them."""

import dagster as dg

from teleprompt_assets.defs.io import ByPartition
from teleprompt_assets.defs.partitions import targets
from teleprompt_assets.defs.resources import TelepromptResource
from teleprompt_assets.defs.run_tracking import Tracking, track
from teleprompt_assets.ingest import traces


def build_raw_traces(partitions: dg.PartitionsDefinition, group: str) -> dg.AssetsDefinition:
    @dg.asset(partitions_def=partitions, group_name=group, kinds={"mlflow", "polars"})
    def raw_traces(context: dg.AssetExecutionContext, teleprompt: TelepromptResource, mlflow: Tracking) -> ByPartition:
        """One day of a program's production traces, as MLflow holds them."""
        client = teleprompt.client()
        out = ByPartition()
        for t in targets(context):
            spec = teleprompt.spec(t.program)
            out[t.key] = table = traces.read_day(client, teleprompt.experiment_id(client, spec.config.experiment), t.day)
            context.add_asset_metadata(read_metadata(table.height, spec.config.experiment), partition_key=t.key)
            track(mlflow, t, tags={"partition_date": t.day}, metrics={"traces_read": table.height})
        return out

    return raw_traces


def read_metadata(read: int, experiment: str) -> dict:
    return {"traces_read": read, "experiment": experiment}
