import dagster as dg
import polars as pl
import pytest

from teleprompt_assets.core import object_store
from teleprompt_assets.defs.io import ByPartition, TableIOManager


def _write(manager, obj):
    manager.handle_output(dg.build_output_context(asset_key=dg.AssetKey(["curated_traces"])), obj)


def _read(manager):
    return manager.load_input(dg.build_input_context(asset_key=dg.AssetKey(["curated_traces"])))


def test_outputs_round_trip_and_leave_no_staging_files(tmp_path):
    manager = TableIOManager(base_url=str(tmp_path))
    frame = pl.DataFrame({"trace_id": ["a", "b"], "n": [1, 2]})
    _write(manager, frame)
    assert _read(manager).equals(frame)
    _write(manager, frame.head(1))
    assert _read(manager).equals(frame.head(1))
    assert [p.name for p in (tmp_path / "curated_traces").iterdir()] == ["__all__.parquet"]


def test_a_write_that_dies_midway_keeps_the_previous_output(tmp_path, monkeypatch):
    manager = TableIOManager(base_url=str(tmp_path))
    before = pl.DataFrame({"trace_id": ["a"], "n": [1]})
    _write(manager, before)

    def crash(fd):  # the new bytes are written but not yet durable: the disk fills up
        raise OSError("disk full")

    monkeypatch.setattr(object_store.os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        _write(manager, pl.DataFrame({"trace_id": ["b", "c"], "n": [2, 3]}))
    monkeypatch.undo()
    assert _read(manager).equals(before)
    assert [p.name for p in (tmp_path / "curated_traces").iterdir()] == ["__all__.parquet"]


def _partitioned(manager, keys, obj=None, allow_missing=False):
    partitions = dg.StaticPartitionsDefinition(["a", "b"])
    if obj is not None:
        manager.handle_output(dg.build_output_context(asset_key=dg.AssetKey(["t"]), partition_key=keys[0]) if len(keys) == 1 else
                              _range_output_context(keys, partitions), obj)
        return None
    context = dg.build_input_context(asset_key=dg.AssetKey(["t"]), asset_partitions_def=partitions, asset_partition_key_range=dg.PartitionKeyRange(keys[0], keys[-1]),
                                     definition_metadata={"allow_missing_partitions": allow_missing})
    return manager.load_input(context)


def _range_output_context(keys, partitions):
    return dg.build_output_context(asset_key=dg.AssetKey(["t"]), asset_partitions_def=partitions, asset_partition_key_range=dg.PartitionKeyRange(keys[0], keys[-1]))


def test_partitioned_values_travel_one_file_per_partition(tmp_path):
    manager = TableIOManager(base_url=str(tmp_path))
    _partitioned(manager, ["a", "b"], ByPartition({"a": pl.DataFrame({"n": [1]}), "b": {"x": 2}}))
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["a.parquet", "b.json"]
    loaded = _partitioned(manager, ["a", "b"])
    assert isinstance(loaded, ByPartition) and loaded["b"] == {"x": 2} and loaded["a"]["n"].to_list() == [1]


def test_a_partition_must_be_returned_and_must_exist_unless_missing_ones_are_allowed(tmp_path):
    manager = TableIOManager(base_url=str(tmp_path))
    with pytest.raises(TypeError, match=r"t must return ByPartition with keys \['a', 'b'\], got \['a'\]"):
        _partitioned(manager, ["a", "b"], ByPartition({"a": 1}))
    _partitioned(manager, ["a"], ByPartition({"a": 1}))
    with pytest.raises(FileNotFoundError, match="t partition b has not been materialized"):
        _partitioned(manager, ["a", "b"])
    assert _partitioned(manager, ["a", "b"], allow_missing=True) == {"a": 1}


def test_partitions_round_trip_through_s3(s3):
    """The same manager on an S3 bucket (moto's server): what a second host reads is what the first wrote."""
    writer, reader = TableIOManager(base_url="s3://teleprompt/io-test"), TableIOManager(base_url="s3://teleprompt/io-test")
    _partitioned(writer, ["a", "b"], ByPartition({"a": pl.DataFrame({"n": [1, 2]}), "b": {"x": 2}}))
    loaded = _partitioned(reader, ["a", "b"])
    assert loaded["b"] == {"x": 2} and loaded["a"]["n"].to_list() == [1, 2]
    assert s3.bytes_under("teleprompt", "io-test/t/")[0] == 2
    assert _partitioned(reader, ["a", "b"], allow_missing=True).keys() == {"a", "b"}
