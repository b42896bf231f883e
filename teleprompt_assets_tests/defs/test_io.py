import dagster as dg
import polars as pl
import pytest

from teleprompt_assets.defs.io import LocalTableIOManager


def _write(manager, obj):
    manager.handle_output(dg.build_output_context(asset_key=dg.AssetKey(["curated_traces"])), obj)


def _read(manager):
    return manager.load_input(dg.build_input_context(asset_key=dg.AssetKey(["curated_traces"])))


def test_outputs_round_trip_and_leave_no_staging_files(tmp_path):
    manager = LocalTableIOManager(base_dir=str(tmp_path))
    frame = pl.DataFrame({"trace_id": ["a", "b"], "n": [1, 2]})
    _write(manager, frame)
    assert _read(manager).equals(frame)
    _write(manager, frame.head(1))
    assert _read(manager).equals(frame.head(1))
    assert [p.name for p in (tmp_path / "curated_traces").iterdir()] == ["__all__.parquet"]


def test_a_write_that_dies_midway_keeps_the_previous_output(tmp_path, monkeypatch):
    manager = LocalTableIOManager(base_dir=str(tmp_path))
    before = pl.DataFrame({"trace_id": ["a"], "n": [1]})
    _write(manager, before)

    def half_then_crash(self, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"PAR1 truncated")
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", half_then_crash)
    with pytest.raises(OSError, match="disk full"):
        _write(manager, pl.DataFrame({"trace_id": ["b", "c"], "n": [2, 3]}))
    monkeypatch.undo()
    assert _read(manager).equals(before)
    assert [p.name for p in (tmp_path / "curated_traces").iterdir()] == ["__all__.parquet"]
