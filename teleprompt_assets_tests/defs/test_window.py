"""A run trains on its whole window: days never curated are ingested by the run itself (issue 14:
`teleprompt run --date D` materialized day D only and trained on one day of a seven-day window)."""

import os
from datetime import date, timedelta

import dagster as dg
import pytest

from teleprompt_assets.core.settings import load_settings
from teleprompt_assets.core.spec import load_project
from teleprompt_assets.definitions import build_definitions
from teleprompt_assets.defs.partitions import key_of
from teleprompt_assets.launch import run_partition
from teleprompt_assets.samples.seed import seed_program
from teleprompt_assets_tests.conftest import set_env

END = date(2026, 10, 9)
GAP = END - timedelta(days=1)  # no traffic that day: curated as an empty day, not skipped


@pytest.fixture(scope="module")
def window_run(tmp_path_factory):
    saved = set_env(tmp_path_factory.mktemp("window") / "tp")
    try:
        settings = load_settings()
        spec = load_project(settings.config_path)[1]["ticket_router"]
        seed_program(settings, spec, END - timedelta(days=2), days=2, per_day=15, seed=3)
        seed_program(settings, spec, END, days=1, per_day=15, seed=4)
        defs = build_definitions()
        with dg.instance_for_test() as instance:
            first = run_partition(defs, "ticket_router", END.isoformat(), instance)
            again = run_partition(defs, "ticket_router", END.isoformat(), instance)
            yield first, again, instance
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _materialized(instance, asset: str) -> dict[str, dict]:
    records = instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records
    return {r.partition_key: r.asset_materialization.metadata for r in records}


def test_the_run_curates_every_day_of_its_window_it_was_never_given(window_run):
    first, _, instance = window_run
    days = [(END - timedelta(days=i)).isoformat() for i in range(7)]
    for asset in ("raw_traces", "curated_traces", "quarantined_traces"):
        done = _materialized(instance, asset)
        assert {key_of("ticket_router", d) for d in days} <= set(done), asset
        for d in days[1:]:
            assert done[key_of("ticket_router", d)]["filled_for"].value == key_of("ticket_router", END.isoformat())
    curated = _materialized(instance, "curated_traces")
    assert curated[key_of("ticket_router", GAP.isoformat())]["read"].value == 0
    read = sum(curated[key_of("ticket_router", d)]["read"].value for d in days[1:])
    assert read == 30
    from teleprompt_assets.ingest.traces import day_bounds_ms

    table = first["training_set"]
    assert table["timestamp_ms"].min() < day_bounds_ms(GAP.isoformat())[0]  # the earlier days are in the window
    assert len(table) > len(first["curated_traces"])


def test_a_rerun_finds_the_window_complete_and_trains_on_the_same_data(window_run):
    first, again, _ = window_run
    assert again["training_set"].equals(first["training_set"])
    assert again["registered_version"]["version"] == first["registered_version"]["version"]


def test_a_day_another_run_curated_after_this_step_started_is_read_not_lost(window_run):
    """Two runs at once (test_day_order): the step's input was loaded before the other run curated
    a day of the window; the day is then materialized but absent from the input. It is read from
    storage (before: neither loaded nor filled, so the window was silently short)."""
    from teleprompt_assets.defs.io import ByPartition, TableIOManager
    from teleprompt_assets.defs.partitions import target_of
    from teleprompt_assets.defs.resources import TelepromptResource
    from teleprompt_assets.defs.training import fill_window

    first, _, instance = window_run
    settings = load_settings()
    io = TableIOManager(base_url=str(settings.storage))
    key = key_of("ticket_router", END.isoformat())
    events = lambda: len(instance.fetch_materializations(dg.AssetKey("curated_traces"), limit=1000).records)  # noqa: E731
    before = events()
    filled = fill_window(dg.build_asset_context(instance=instance), TelepromptResource(), io, target_of(key), 7, ByPartition({key: first["curated_traces"]}))
    assert sorted(filled) == sorted(key_of("ticket_router", (END - timedelta(days=i)).isoformat()) for i in range(1, 7))
    assert sum(table.height for table in filled.values()) == sum(
        _materialized(instance, "curated_traces")[k]["accepted"].value for k in filled)
    assert events() == before  # read, not ingested again
