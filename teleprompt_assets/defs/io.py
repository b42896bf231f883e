"""Stores asset outputs under ``TELEPROMPT_HOME/storage``: polars tables as parquet, the rest as JSON.

Window inputs (several upstream partitions) load as one table of the partitions that exist, so a
window reaching back before the first seeded day still loads.
"""


import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl


def publish(path: Path, write: Callable[[Path], None]) -> None:
    """Write beside ``path``, fsync, then rename over it: a run killed mid-write leaves the previous
    output (or none), never a truncated file a later step would fail to read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        write(staged)
        with open(staged, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)


class LocalTableIOManager(dg.ConfigurableIOManager):
    base_dir: str

    def _path(self, asset_key: dg.AssetKey, partition: str | None, suffix: str) -> Path:
        name = (partition or "__all__").replace("|", "__").replace("/", "_")
        return Path(self.base_dir, *asset_key.path, f"{name}.{suffix}")

    def _key(self, context: dg.OutputContext) -> dg.AssetKey:
        """Asset outputs by asset key; plain op outputs (operational jobs) by run and step."""
        if context.has_asset_key:
            return context.asset_key
        return dg.AssetKey(["_ops", context.run_id, f"{context.step_key}.{context.name}"])

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        partition = context.partition_key if context.has_asset_key and context.has_partition_key else None
        key = self._key(context)
        if isinstance(obj, pl.DataFrame):
            publish(self._path(key, partition, "parquet"), obj.write_parquet)
        else:
            text = json.dumps(obj, sort_keys=True, indent=1, default=str)
            publish(self._path(key, partition, "json"), lambda staged: staged.write_text(text))

    def _load(self, asset_key: dg.AssetKey, partition: str | None) -> Any:
        parquet = self._path(asset_key, partition, "parquet")
        if parquet.exists():
            return pl.read_parquet(parquet)
        as_json = self._path(asset_key, partition, "json")
        if as_json.exists():
            return json.loads(as_json.read_text())
        return None

    def load_input(self, context: dg.InputContext) -> Any:
        if not context.has_asset_key:
            return self._load(self._key(context.upstream_output), None)
        key = context.asset_key
        if not context.has_asset_partitions:
            return self._load(key, None)
        keys = context.asset_partition_keys
        if len(keys) == 1:
            found = self._load(key, keys[0])
            if found is None:
                raise FileNotFoundError(f"{key.to_user_string()} partition {keys[0]} has not been materialized")
            return found
        parts = [p for p in (self._load(key, k) for k in keys) if p is not None]
        if parts and all(isinstance(p, pl.DataFrame) for p in parts):
            return pl.concat(parts, how="vertical_relaxed")
        return parts
