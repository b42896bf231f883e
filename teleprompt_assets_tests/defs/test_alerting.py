"""Alerting sensors against a real Dagster instance and a webhook on 127.0.0.1 (no MLflow store needed)."""

from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from teleprompt_assets.core.config import WEBHOOK_ENV
from teleprompt_assets.core.settings import load_settings
from teleprompt_assets.definitions import build_definitions
from teleprompt_assets.defs.alerting import AlertingResource
from teleprompt_assets.defs.resources import TelepromptResource
from teleprompt_assets_tests.conftest import config_with_sections
from teleprompt_assets_tests.core.test_alerts import SECRET, Hook

DAY = "2026-05-02|ticket_router"


@pytest.fixture
def hook():
    server = Hook()
    yield server
    server.close()


@pytest.fixture
def env(tp_home, tmp_path, monkeypatch):
    """Definitions with alert thresholds for small test volumes, and one Dagster instance."""
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    automation = {"alerts": {"min_traces": 5, "dagster_ui_url": "http://127.0.0.1:3000/"}}
    monkeypatch.setenv("TELEPROMPT_CONFIG", str(config_with_sections(tmp_path, automation=automation)))
    defs = build_definitions()
    with dg.instance_for_test() as instance:
        yield defs.get_repository_def(), instance


def _tick(env, name, cursor, url):
    repo, instance = env
    context = dg.build_sensor_context(instance=instance, cursor=cursor, repository_def=repo,
                                      resources={"alerts": AlertingResource(webhook_url=url, retries=0), "teleprompt": TelepromptResource()})
    result = repo.get_sensor_def(name)(context)
    return result.skip_reason.skip_message if result.skip_reason else None, result.cursor


def _materialize(instance, asset, partition, **metadata):
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=asset, partition=partition, metadata=metadata))


def _curated(day: str, values: list[bool]):
    path = Path(load_settings().storage) / "curated_traces" / f"{day}__ticket_router.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"feedback": [f'{{"resolved_first_touch": {str(v).lower()}, "csat": 0.8}}' for v in values]}).write_parquet(path)


def test_anomaly_sensor_alerts_on_quarantine_spike_drift_and_lm_errors(env, hook):
    _, instance = env
    _materialize(instance, "curated_traces", "2026-04-30|ticket_router", accepted=50, quarantine_rate=0.5)  # before the sensor ran
    skip, cursor = _tick(env, "anomaly_alerts", None, hook.url)
    assert skip == "first tick: watching materializations from now on" and hook.received == []
    end = date(2026, 5, 2)
    for i in range(1, 7):
        _curated((end - timedelta(days=i)).isoformat(), [True] * 10)
    _curated(end.isoformat(), [False] * 8 + [True] * 2)  # resolved 0.2 against 1.0
    _materialize(instance, "curated_traces", "2026-05-01|ticket_router", accepted=40, quarantine_rate=0.6)
    _materialize(instance, "curated_traces", DAY, accepted=99, quarantine_rate=0.01)
    _materialize(instance, "compiled_program", DAY, lm_calls=50, lm_errors=10)
    _materialize(instance, "compiled_program", "2026-05-01|ticket_router", lm_calls=50)  # no lm_errors: rule silent
    skip, cursor = _tick(env, "anomaly_alerts", cursor, hook.url)
    assert skip == "3 alert(s) sent"
    titles = [r["json"]["blocks"][0]["text"]["text"] for r in hook.received]
    assert titles == ["Quarantine spike: ticket_router 2026-05-01", "Outcome drift: ticket_router 2026-05-02 resolved_first_touch",
                      "LM errors: ticket_router 2026-05-02"]
    assert "fell to 0.200 from 1.000" in hook.received[1]["json"]["text"]
    assert _tick(env, "anomaly_alerts", cursor, hook.url)[0] == "no alerts"  # each materialization is judged once
    assert len(hook.received) == 3


def test_deltaone_sensor_announces_attested_partitions_only(env, hook):
    _, instance = env
    skip, cursor = _tick(env, "deltaone_alerts", None, hook.url)
    _materialize(instance, "evaluation_report", DAY, delta_ppm=125000, ci_low_ppm=40000, baseline_score=0.5, candidate_score=0.625, holdout=40)
    _materialize(instance, "deltaone_attestation", "2026-05-01|ticket_router", attested=False, reason="DeltaOne not reached")
    _materialize(instance, "deltaone_attestation", DAY, attested=True, uid="0xabc", explorer=dg.MetadataValue.url("https://example.org/att/0xabc"))
    skip, cursor = _tick(env, "deltaone_alerts", cursor, hook.url)
    assert skip == "1 alert(s) sent"
    [got] = hook.received
    body = got["json"]
    assert body["text"].startswith("DeltaOne attested: ticket_router 2026-05-02") and "0xabc" in body["text"]
    assert {"type": "mrkdwn", "text": "*delta_ppm*\n125000"} in body["blocks"][2]["fields"]
    assert "<https://example.org/att/0xabc|details>" in str(body["blocks"][-1])


def test_failed_delivery_is_visible_and_redacted(env, hook, monkeypatch):
    _, instance = env
    _, cursor = _tick(env, "deltaone_alerts", None, None)
    _materialize(instance, "deltaone_attestation", DAY, attested=True, uid="0xdef")
    hook.script = [(403, {}, 0)]
    monkeypatch.setenv(WEBHOOK_ENV, hook.url)  # the environment variable is the documented way
    skip, _ = _tick(env, "deltaone_alerts", cursor, None)
    assert skip.startswith("1 alert(s), 1 not delivered: alert 'DeltaOne attested: ticket_router 2026-05-02' not delivered to webhook "
                           f"{hook.base} after 1 attempt(s): HTTP 403")
    assert SECRET not in skip and len(hook.received) == 1


@dg.op
def _explode():
    raise ValueError("kaboom: the LM endpoint refused the key")


@dg.job
def _failing_job():
    _explode()


def test_run_failure_sensor_posts_the_error(env, hook):
    repo, instance = env
    result = _failing_job.execute_in_process(instance=instance, raise_on_error=False, tags={"dagster/partition": DAY})
    assert not result.success
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_alert", dagster_instance=instance, dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(), resources={"alerts": AlertingResource(webhook_url=hook.url)}, repository_def=repo,
    ).for_run_failure()
    repo.get_sensor_def("run_failure_alert")(context)
    [got] = hook.received
    body = got["json"]
    assert body["blocks"][0]["text"]["text"] == f"Run failed: _failing_job {DAY}"
    assert "_explode: ValueError: kaboom: the LM endpoint refused the key" in body["text"]
    assert f"http://127.0.0.1:3000/runs/{result.run_id}" in str(body["blocks"][-1])
