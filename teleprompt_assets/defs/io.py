"""Stores asset outputs in an object store (``TELEPROMPT_STORAGE_URL``: a folder, by default
``$TELEPROMPT_HOME/storage``, or ``s3://bucket/prefix`` when steps run on several hosts): polars
tables as parquet, the rest as JSON, one object per asset partition.

A partitioned asset's step may materialize several partitions (a run's programs), so partitioned
outputs and inputs travel as ``ByPartition``: one value per partition key. Window inputs hold the
upstream partitions that exist, so a window reaching back before the first seeded day still loads.
"""


import io
import json
from functools import lru_cache
from typing import Any

import dagster as dg
import polars as pl

from teleprompt_assets.core.object_store import ObjectStore, open_store


class ByPartition(dict[str, Any]):
    """A partitioned asset's value per partition key of the step (one key, or a run's range)."""


@lru_cache(maxsize=16)
def _store(location: str) -> ObjectStore:
    return open_store(location)  # one S3 client per process, not one per output


class TableIOManager(dg.ConfigurableIOManager):
    base_url: str

    @property
    def objects(self) -> ObjectStore:
        return _store(self.base_url)

    def _object(self, asset_key: dg.AssetKey, partition: str | None, suffix: str) -> str:
        name = (partition or "__all__").replace("|", "__").replace("/", "_")
        return "/".join([*asset_key.path, f"{name}.{suffix}"])

    def _key(self, context: dg.OutputContext) -> dg.AssetKey:
        """Asset outputs by asset key; plain op outputs (operational jobs) by run and step."""
        if context.has_asset_key:
            return context.asset_key
        mapped = f"[{context.mapping_key}]" if context.mapping_key else ""
        return dg.AssetKey(["_ops", context.run_id, f"{context.step_key}.{context.name}{mapped}"])

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        key = self._key(context)
        if context.has_asset_key and context.has_asset_partitions:
            expected = set(context.asset_partition_keys)
            if not isinstance(obj, ByPartition) or set(obj) != expected:
                got = sorted(obj) if isinstance(obj, ByPartition) else type(obj).__name__
                raise TypeError(f"{key.to_user_string()} must return ByPartition with keys {sorted(expected)}, got {got}")
            for partition, value in sorted(obj.items()):
                self._write(key, partition, value)
            return
        self._write(key, None, obj)

    def store(self, asset_key: dg.AssetKey, partition: str, obj: Any) -> None:
        """Write one partition of an asset outside its own step (the training window's catch-up)."""
        self._write(asset_key, partition, obj)

    def _write(self, key: dg.AssetKey, partition: str | None, obj: Any) -> None:
        if obj is None:
            return
        if isinstance(obj, pl.DataFrame):
            buffer = io.BytesIO()
            obj.write_parquet(buffer)
            self.objects.put(self._object(key, partition, "parquet"), buffer.getvalue())
        else:
            self.objects.put(self._object(key, partition, "json"), json.dumps(obj, sort_keys=True, indent=1, default=str).encode())

    def load(self, asset_key: dg.AssetKey, partition: str | None) -> Any:
        """A stored output (a partition of it), or None if it was never written."""
        store = self.objects
        parquet = store.get(self._object(asset_key, partition, "parquet"))
        if parquet is not None:
            return pl.read_parquet(io.BytesIO(parquet))
        as_json = store.get(self._object(asset_key, partition, "json"))
        return json.loads(as_json) if as_json is not None else None

    def load_input(self, context: dg.InputContext) -> Any:
        if not context.has_asset_key:
            return self.load(self._key(context.upstream_output), None)
        key = context.asset_key
        if not context.has_asset_partitions:
            return self.load(key, None)
        allow_missing = bool((context.definition_metadata or {}).get("allow_missing_partitions"))
        loaded = ByPartition()
        for partition in context.asset_partition_keys:
            found = self.load(key, partition)
            if found is None and not allow_missing:
                raise FileNotFoundError(f"{key.to_user_string()} partition {partition} has not been materialized")
            if found is not None:
                loaded[partition] = found
        return loaded
