"""The daily schedule and the new-traces sensor, against a real sqlite MLflow store."""

import json
from datetime import datetime, timedelta, timezone

import dagster as dg

from teleprompt_assets.contract import label_trace, traced_call
from teleprompt_assets.definitions import build_definitions
from teleprompt_assets.defs.resources import TelepromptResource
from teleprompt_assets.programs import load_project
from teleprompt_assets.seed import day_start_ns
from teleprompt_assets.settings import load_settings
from teleprompt_assets.tracking import connect, experiment_id

ADDRESS = "0xA2DFbbE547B9fe2Eb36D63B62AE89F1b950f0dD8"


def test_daily_schedule_requests_yesterday_for_every_program(tp_home):
    defs = build_definitions()
    repo = defs.get_repository_def()
    schedule = repo.get_schedule_def("daily_optimization")
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=datetime(2026, 5, 2, 1, tzinfo=timezone.utc), repository_def=repo, resources={"teleprompt": TelepromptResource()})
        requests = list(schedule.evaluate_tick(context).run_requests)
    assert [r.partition_key for r in requests] == ["2026-05-01|ticket_router"]
    assert requests[0].run_key == "ticket_router|2026-05-01|schedule:2026-05-01"


def _log(exp_id, day, n):
    for i in range(n):
        trace_id, _ = traced_call("ticket_router", ADDRESS, {"message": f"hello {i}"}, lambda message: {"queue": "sales"},
                                  experiment_id=exp_id, start_time_ns=day_start_ns(day) + (i + 1) * 10**9)
        label_trace(trace_id, ADDRESS, {"resolved_first_touch": True}, {"queue": "sales"})


def test_sensor_fires_on_new_and_late_traces_and_dedupes(tp_home):
    settings = load_settings()
    client = connect(settings)
    exp_id = experiment_id(client, settings, load_project(settings.config_path)[1]["ticket_router"].config.experiment)
    yesterday = (datetime.now(timezone.utc) - timedelta(days=1)).date()
    older = yesterday - timedelta(days=1)
    defs = build_definitions()
    repo = defs.get_repository_def()
    sensor = repo.get_sensor_def("new_traces_sensor")

    def tick(cursor):
        with dg.instance_for_test() as instance:
            context = dg.build_sensor_context(instance=instance, cursor=cursor, repository_def=repo, resources={"teleprompt": TelepromptResource()})
            result = sensor(context)
        return [r.partition_key for r in result.run_requests], result.cursor

    assert tick(None)[0] == []
    _log(exp_id, yesterday, 2)
    keys, cursor = tick(None)
    assert keys == [f"{yesterday.isoformat()}|ticket_router"]
    assert tick(cursor)[0] == []  # nothing new: no request
    _log(exp_id, older, 1)  # a late trace for an older day
    keys, cursor = tick(cursor)
    assert keys == [f"{older.isoformat()}|ticket_router"]
    assert json.loads(cursor)["ticket_router"][older.isoformat()] == 1
