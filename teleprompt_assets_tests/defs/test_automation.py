"""The optimization-cycle schedule and the new-traces sensor, against one real sqlite MLflow store per module."""

import json
import os
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import dagster as dg
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from teleprompt_assets.core.settings import load_settings
from teleprompt_assets.core.spec import load_project
from teleprompt_assets.core.tracking import connect, experiment_id
from teleprompt_assets.definitions import build_definitions
from teleprompt_assets.defs.partitions import program_day_partitions
from teleprompt_assets.defs.resources import TelepromptResource
from teleprompt_assets.ingest.tracing import label_trace, traced_call
from teleprompt_assets.samples.seed import day_start_ns
from teleprompt_assets_tests.conftest import config_with_sections, set_env

ADDRESS = "0xA2DFbbE547B9fe2Eb36D63B62AE89F1b950f0dD8"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One MLflow store for the module (creating one costs seconds); tests use days apart from each other."""
    saved = set_env(tmp_path_factory.mktemp("automation") / "tp")
    try:
        settings = load_settings()
        client = connect(settings)
        yield experiment_id(client, settings, load_project(settings.config_path)[1]["ticket_router"].config.experiment)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _defs(monkeypatch, **automation):
    """Definitions from a config whose ``automation:`` section is ``automation``."""
    folder = Path(tempfile.mkdtemp(prefix="tp-automation-"))
    monkeypatch.setenv("TELEPROMPT_CONFIG", str(config_with_sections(folder, automation=automation)))
    return build_definitions()


def _log(exp_id, day, n, start=0):
    for i in range(start, start + n):
        trace_id, _ = traced_call("ticket_router", ADDRESS, {"message": f"hello {i}"}, lambda message: {"queue": "sales"},
                                  experiment_id=exp_id, start_time_ns=day_start_ns(day) + (i + 1) * 10**9)
        label_trace(trace_id, ADDRESS, {"resolved_first_touch": True}, {"queue": "sales"})


class _Tick(NamedTuple):
    run_requests: list
    skip_message: str | None


def _covers(request: dg.RunRequest) -> list[str]:
    """The partition keys a request's run materializes: its partition, or its range of programs."""
    if request.partition_key:
        return [request.partition_key]
    partitions = program_day_partitions(date(2026, 1, 1), list(load_project(load_settings().config_path)[1]))
    span = dg.PartitionKeyRange(request.tags[ASSET_PARTITION_RANGE_START_TAG], request.tags[ASSET_PARTITION_RANGE_END_TAG])
    return sorted(str(k) for k in partitions.get_partition_keys_in_range(span))


def _mine(requests):
    """The requests whose run optimizes ticket_router (teleprompt.yaml may register more programs)."""
    return [r for r in requests if any(k.endswith("|ticket_router") for k in _covers(r))]


def _keys(requests) -> list[str]:
    return [k for r in _mine(requests) for k in _covers(r) if k.endswith("|ticket_router")]


@pytest.fixture
def instance():
    """One Dagster instance per test: a second one in the same test trips dagster's defs-state weakref."""
    with dg.instance_for_test() as instance:
        yield instance


def _schedule_tick(instance, defs, when: datetime):
    repo = defs.get_repository_def()
    [schedule] = repo.schedule_defs
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=when, repository_def=repo, resources={"teleprompt": TelepromptResource()})
    tick = schedule.evaluate_tick(context)
    return schedule, _Tick(list(tick.run_requests or []), tick.skip_message)


def test_daily_schedule_requests_yesterday_for_every_program_in_one_run(tp_home, instance):
    schedule, tick = _schedule_tick(instance, build_definitions(), datetime(2026, 5, 2, 1, tzinfo=UTC))
    assert (schedule.name, schedule.cron_schedule) == ("daily_optimization", "0 1 * * *")
    [request] = tick.run_requests
    assert _covers(request) == ["2026-05-01|outreach_reply", "2026-05-01|ticket_router"]
    assert request.run_key == "outreach_reply+ticket_router|2026-05-01|schedule:2026-05-01"
    assert request.tags["teleprompt/cycle"] == "daily" and request.tags["teleprompt/programs"] == "outreach_reply,ticket_router"


def test_weekly_and_monthly_cycles_optimize_the_cycles_last_day(tp_home, monkeypatch, instance):
    schedule, tick = _schedule_tick(instance, _defs(monkeypatch, cycle="weekly", hour=2), datetime(2026, 5, 4, 2, tzinfo=UTC))  # a Monday
    assert (schedule.name, schedule.cron_schedule) == ("weekly_optimization", "0 2 * * 1")
    assert _keys(tick.run_requests) == ["2026-05-03|ticket_router"]  # the Sunday that closed the week
    schedule, tick = _schedule_tick(instance, _defs(monkeypatch, cycle="monthly"), datetime(2026, 6, 1, 1, tzinfo=UTC))
    assert (schedule.name, schedule.cron_schedule) == ("monthly_optimization", "0 1 1 * *")
    assert _keys(tick.run_requests) == ["2026-05-31|ticket_router"]
    assert _mine(tick.run_requests)[0].tags["teleprompt/cycle"] == "monthly"


def test_schedule_trigger_conditions_skip_with_a_reason(store, monkeypatch, instance):
    day = date(2026, 3, 10)
    defs = _defs(monkeypatch, min_new_traces=2, min_window_traces=3)
    when = datetime(2026, 3, 11, 1, tzinfo=UTC)
    _, tick = _schedule_tick(instance, defs, when)
    assert tick.run_requests == [] and tick.skip_message.startswith("daily cycle for 2026-03-10 skipped: ")
    assert ("ticket_router: 0 new traces in the daily period < min_new_traces=2; "
            "0 traces in the 7-day window < min_window_traces=3") in tick.skip_message
    _log(store, day - timedelta(days=3), 2)  # in the window, not in the period
    _log(store, day, 1)
    _log(store, day - timedelta(days=7), 5)  # outside the 7-day window
    _, tick = _schedule_tick(instance, defs, when)
    assert "ticket_router: 1 new traces in the daily period < min_new_traces=2 |" in tick.skip_message + " |"
    _log(store, day, 1, start=1)
    _, tick = _schedule_tick(instance, defs, when)
    assert [r.partition_key for r in tick.run_requests] == ["2026-03-10|ticket_router"]  # outreach_reply has no traffic: skipped


def _sensor_tick(instance, defs, cursor):
    repo = defs.get_repository_def()
    sensor = repo.get_sensor_def("new_traces_sensor")
    context = dg.build_sensor_context(instance=instance, cursor=cursor, repository_def=repo, resources={"teleprompt": TelepromptResource()})
    result = sensor(context)
    return [r.partition_key for r in _mine(result.run_requests or [])], result.cursor, result.skip_reason


def test_sensor_fires_on_new_and_late_traces_and_dedupes(store, instance):
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date()
    older = yesterday - timedelta(days=1)
    defs = build_definitions()
    keys, _, skip = _sensor_tick(instance, defs, None)
    assert keys == [] and "no day with >= 1 new traces in the last 3 closed days" in skip.skip_message
    _log(store, yesterday, 2)
    keys, cursor, _ = _sensor_tick(instance, defs, None)
    assert keys == [f"{yesterday.isoformat()}|ticket_router"]
    assert _sensor_tick(instance, defs, cursor)[0] == []  # nothing new: no request
    _log(store, older, 1)  # a late trace for an older day
    keys, cursor, _ = _sensor_tick(instance, defs, cursor)
    assert keys == [f"{older.isoformat()}|ticket_router"]
    assert json.loads(cursor)["ticket_router"][older.isoformat()] == 1


def test_sensor_minimum_count_is_configurable(store, monkeypatch, instance):
    day = (datetime.now(UTC) - timedelta(days=5)).date()
    defs = _defs(monkeypatch, sensor={"min_new_traces": 3, "lookback_days": 5})
    assert defs.get_repository_def().get_sensor_def("new_traces_sensor").description.startswith("Re-runs a closed day of the last 5 once it has >= 3")
    _log(store, day, 2)
    keys, cursor, skip = _sensor_tick(instance, defs, json.dumps({"ticket_router": {}}))
    assert f"ticket_router {day.isoformat()}: 2 new" in skip.skip_message and f"{day.isoformat()}|ticket_router" not in keys
    _log(store, day, 1, start=2)
    keys, cursor, _ = _sensor_tick(instance, defs, cursor)
    assert f"{day.isoformat()}|ticket_router" in keys
    assert json.loads(cursor)["ticket_router"][day.isoformat()] == 3


def test_sensor_counts_a_large_day_over_several_short_ticks(store, monkeypatch, instance):
    day = (datetime.now(UTC) - timedelta(days=2)).date()
    _, cursor, _ = _sensor_tick(instance, _defs(monkeypatch, sensor={"lookback_days": 2}), None)  # counts as they stand now
    _log(store, day, 3, start=20)
    monkeypatch.setattr("teleprompt_assets.ingest.traces.LIST_PAGE", 1)  # one trace a page: every day takes several pages
    defs = _defs(monkeypatch, sensor={"lookback_days": 2, "tick_budget_s": 1e-6})
    ticks, fired = 0, []
    while not fired:
        keys, cursor, skip = _sensor_tick(instance, defs, cursor)
        ticks += 1
        fired = [k for k in keys if k == f"{day.isoformat()}|ticket_router"]
        if not fired:
            assert "still counting" in skip.skip_message and "_next" in json.loads(cursor)
        assert ticks < 50
    assert ticks > 3  # one page a tick: the day was counted over several ticks, each cut short
    before = json.loads(cursor)["ticket_router"][day.isoformat()]
    for _ in range(ticks):  # more ticks than a whole round of counting takes: the day does not fire again
        keys, cursor, _ = _sensor_tick(instance, defs, cursor)
        assert f"{day.isoformat()}|ticket_router" not in keys
    assert json.loads(cursor)["ticket_router"][day.isoformat()] == before
