"""Fan-out for the LM-bound assets: one step per program of the run.

An asset is one step per run, so the programs a run holds would otherwise be worked through one
after another. A graph-backed asset instead lists the run's program × day partitions as dynamic
outputs (``programs_in_run``), maps a per-program op over them (one step each, run side by side by
the multiprocess executor; a retry policy retries only the program that failed), and collects the
results into the asset. Mapped ops return a ``staged`` dict, which travels between step processes
as JSON; the collector turns it into the asset's value and per-partition metadata.
"""

import re
from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg

from teleprompt_assets.defs.io import ByPartition
from teleprompt_assets.defs.partitions import target_of, targets


def mapping_key(key: str) -> str:
    t = target_of(key)
    return re.sub(r"\W", "_", f"{t.program}__{t.day}")


@dg.op(ins={"after": dg.In(dg.Nothing)}, out=dg.DynamicOut(str))
def programs_in_run(context: dg.OpExecutionContext) -> Iterator[dg.DynamicOutput[str]]:
    """One output per program × day of the run, each handled by its own step. It waits for the
    upstream asset (``after``) without loading it: the mapped steps load what they use."""
    for t in targets(context):
        yield dg.DynamicOutput(t.key, mapping_key=mapping_key(t.key))


def staged(key: str, value: Any, metadata: dict[str, Any], markdown: tuple[str, ...] = (), as_json: tuple[str, ...] = (), urls: tuple[str, ...] = ()) -> dict:
    """A mapped op's result: the partition's value and its metadata (``markdown`` / ``as_json`` /
    ``urls``: the metadata keys to show as such in the Dagster UI)."""
    return {"key": key, "value": value, "metadata": metadata, "markdown": list(markdown), "json": list(as_json), "urls": list(urls)}


def metadata_of(item: dict) -> dict[str, Any]:
    wrap = {k: dg.MetadataValue.md for k in item["markdown"]} | {k: dg.MetadataValue.json for k in item["json"]} | {k: dg.MetadataValue.url for k in item.get("urls", [])}
    return {k: wrap[k](v) if k in wrap else v for k, v in item["metadata"].items()}


def collect_into(context: dg.AssetExecutionContext, items: list[dict], value: Callable[[Any], Any] = lambda v: v) -> ByPartition:
    """The staged results as the asset's ``ByPartition``, with each partition's metadata attached."""
    out = ByPartition()
    for item in sorted(items, key=lambda i: i["key"]):
        out[item["key"]] = value(item["value"])
        context.add_asset_metadata(metadata_of(item), partition_key=item["key"])
    return out


def collector(asset: str, value: Callable[[Any], Any] = lambda v: v) -> dg.OpDefinition:
    @dg.op(name=f"collect_{asset}", description=f"The run's per-program results as {asset}.")
    def collect(context: dg.AssetExecutionContext, items: list[dict]) -> ByPartition:
        return collect_into(context, items, value)

    return collect


def per_program_asset(name: str, stage: dg.OpDefinition, collect: dg.OpDefinition, *, partitions: dg.PartitionsDefinition,
                      group: str, kinds: set[str], description: str, reads_evaluation: bool = False) -> dg.AssetsDefinition:
    """A graph-backed asset reading (training_set, compiled_program[, evaluation_report]) that maps
    ``stage`` over the run's programs."""
    if reads_evaluation:
        @dg.graph_asset(name=name, partitions_def=partitions, group_name=group, kinds=kinds, description=description)
        def per_program_evaluated(training_set, compiled_program, evaluation_report):
            keys = programs_in_run(after=training_set)
            return collect(keys.map(lambda key: stage(key, training_set, compiled_program, evaluation_report)).collect())

        return per_program_evaluated

    @dg.graph_asset(name=name, partitions_def=partitions, group_name=group, kinds=kinds, description=description)
    def per_program(training_set, compiled_program):
        keys = programs_in_run(after=training_set)
        return collect(keys.map(lambda key: stage(key, training_set, compiled_program)).collect())

    return per_program
