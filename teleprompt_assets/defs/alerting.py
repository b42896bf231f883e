"""Alerting sensors: run failures, anomalies in materialization metadata, and DeltaOne attestations.

Every alert goes to the sensor's Dagster log; when a webhook is configured (``TELEPROMPT_ALERT_WEBHOOK``
or ``automation.alerts.webhook_url``) it is also posted there as Slack-compatible JSON. The asset
sensors read materialization events from the instance's event log after a storage-id cursor, so every
partition materialized between two ticks is seen (``@asset_sensor`` would only see the latest), and
``assets.py`` needs no change. The rules themselves live in ``teleprompt_assets.core.alerts``.
"""

from __future__ import annotations

import json
from datetime import date, timedelta

import dagster as dg

from teleprompt_assets.core import alerts as core
from teleprompt_assets.defs.io import TableIOManager
from teleprompt_assets.defs.partitions import DATE, PROGRAM, run_label
from teleprompt_assets.defs.resources import TelepromptResource

ALERT_RESOURCE = "alerts"
BATCH = 200  # materializations read per asset per tick


class AlertingResource(dg.ConfigurableResource):
    """Where alerts go. ``webhook_url`` here beats ``TELEPROMPT_ALERT_WEBHOOK``, which beats the config file.
    Prefer the environment variable: resource config is visible in the Dagster UI."""

    webhook_url: str | None = None
    timeout_s: float | None = None
    retries: int | None = None

    def deliver(self, alerts: list[core.Alert], config: core.AlertsConfig, log) -> list[str]:
        """Log every alert, post each to the webhook if one is set; returns the delivery errors (redacted)."""
        url = core.webhook_url(config, self.webhook_url)
        errors = []
        for alert in alerts:
            (log.error if alert.severity == "error" else log.warning if alert.severity == "warning" else log.info)(alert.line())
            if not url:
                continue
            try:
                core.send(alert, url, timeout=self.timeout_s or config.timeout_s, retries=config.retries if self.retries is None else self.retries)
            except core.AlertDeliveryError as exc:
                log.error(str(exc))
                errors.append(str(exc))
        return errors


def _root_message(error) -> str:
    """The innermost cause's message: Dagster wraps user errors in 'Error occurred while executing op'."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return (error.message or "").strip()


def _split(partition: str | None) -> tuple[str, str] | None:
    """(program, day) of a ``date|program`` multi-partition key."""
    if not partition or "|" not in partition:
        return None
    day, program = partition.split("|", 1)  # MultiPartitionKey orders dimensions by name: date, program
    return program, day


def _metadata(record) -> dict:
    materialization = record.asset_materialization
    return {k: getattr(v, "value", v) for k, v in (materialization.metadata if materialization else {}).items()}


def _new_records(context, asset: str, cursor: dict) -> tuple[list, bool]:
    """Materializations of ``asset`` after the cursor (ascending); on the first tick only the cursor is set."""
    key = dg.AssetKey(asset)
    if asset not in cursor:
        latest = context.instance.fetch_materializations(key, limit=1)
        cursor[asset] = latest.records[0].storage_id if latest.records else 0
        return [], True
    result = context.instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, after_storage_id=cursor[asset]), limit=BATCH, ascending=True)
    if result.records:
        cursor[asset] = result.records[-1].storage_id
    return list(result.records), False


def _latest_metadata(instance, asset: str, partition: str) -> dict:
    found = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1)
    return _metadata(found.records[0]) if found.records else {}


def _finish(sent: int, errors: list[str], initialized: bool, cursor: dict) -> dg.SensorResult:
    if initialized:
        skip = "first tick: watching materializations from now on"
    elif errors:
        skip = f"{sent} alert(s), {len(errors)} not delivered: {errors[0]}"
    else:
        skip = f"{sent} alert(s) sent" if sent else "no alerts"
    return dg.SensorResult(skip_reason=skip, cursor=json.dumps(cursor, sort_keys=True))


def outcome_window_stats(storage: str, program: str, day: str, window_days: int) -> tuple[dict, dict]:
    """(day, other window days) outcome stats from the stored ``curated_traces`` partitions."""
    io = TableIOManager(base_url=storage)
    end = date.fromisoformat(day)
    day_stats: dict = {}
    window: dict[str, tuple[float, int]] = {}
    for i in range(window_days):
        d = (end - timedelta(days=i)).isoformat()
        table = io.load(dg.AssetKey("curated_traces"), str(dg.MultiPartitionKey({DATE: d, PROGRAM: program})))
        if table is None or not hasattr(table, "columns") or "feedback" not in table.columns:
            continue
        stats = core.outcome_stats(table["feedback"].to_list())
        if i == 0:
            day_stats = stats
        else:
            for name, (total, n) in stats.items():
                prev = window.get(name, (0.0, 0))
                window[name] = (prev[0] + total, prev[1] + n)
    return day_stats, window


def build_alerting(config: core.AlertsConfig | None = None, window_days: int = 7) -> list[dg.SensorDefinition]:
    config = config or core.AlertsConfig()
    ui = config.dagster_ui_url.rstrip("/") if config.dagster_ui_url else None

    @dg.run_failure_sensor(name="run_failure_alert", default_status=dg.DefaultSensorStatus.RUNNING,
                           description="Alerts (log + webhook) when any run of this code location fails.")
    def run_failure_alert(context: dg.RunFailureSensorContext, alerts: AlertingResource):
        if not config.on_run_failure:
            return dg.SkipReason("automation.alerts.on_run_failure is false")
        run = context.dagster_run
        steps = [f"{e.step_key}: {_root_message(e.event_specific_data.error)}" for e in context.get_step_failure_events()
                 if getattr(e.event_specific_data, "error", None)]
        error = " | ".join(steps) or context.failure_event.message or "run failed"
        alert = core.run_failure_alert(run.job_name, run.run_id, run_label(run.tags), error,
                                       f"{ui}/runs/{run.run_id}" if ui else None)
        errors = alerts.deliver([alert], config, context.log)
        if errors:
            return dg.SkipReason(f"alert not delivered: {errors[0]}")

    @dg.sensor(name="anomaly_alerts", minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
               description="Quarantine-rate spikes and outcome drift (curated_traces), LM error rate (compiled_program).")
    def anomaly_alerts(context: dg.SensorEvaluationContext, alerts: AlertingResource, teleprompt: TelepromptResource):
        cursor = json.loads(context.cursor) if context.cursor else {}
        found: list[core.Alert] = []
        curated, init_a = _new_records(context, "curated_traces", cursor)
        compiled, init_b = _new_records(context, "compiled_program", cursor)
        storage = None
        for record in curated:
            where = _split(record.partition_key)
            if not where:
                continue
            program, day = where
            meta = _metadata(record)
            rate, accepted = meta.get("quarantine_rate"), meta.get("accepted")
            read = round(accepted / (1 - rate)) if rate is not None and accepted is not None and rate < 1 else None
            if rate is not None:
                alert = core.quarantine_rate_alert(program, day, float(rate), read, config.quarantine_rate_max, config.min_traces)
                found += [alert] if alert else []
            if config.outcome_drift_max is not None:
                storage = storage or str(teleprompt.settings().storage)
                day_stats, window = outcome_window_stats(storage, program, day, window_days)
                found += core.outcome_drift_alerts(program, day, day_stats, window, config.outcome_drift_max, config.min_traces)
        for record in compiled:
            where = _split(record.partition_key)
            meta = _metadata(record)
            if where and "lm_errors" in meta:
                alert = core.lm_error_rate_alert(where[0], where[1], meta.get("lm_errors"), meta.get("lm_calls"), config.lm_error_rate_max)
                found += [alert] if alert else []
        errors = alerts.deliver(found, config, context.log)
        return _finish(len(found), errors, init_a or init_b, cursor)

    @dg.sensor(name="deltaone_alerts", minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
               description="Announces each deltaone_attestation materialized with attested=True.")
    def deltaone_alerts(context: dg.SensorEvaluationContext, alerts: AlertingResource):
        if not config.on_deltaone:
            return dg.SensorResult(skip_reason="automation.alerts.on_deltaone is false", cursor=context.cursor)
        cursor = json.loads(context.cursor) if context.cursor else {}
        records, initialized = _new_records(context, "deltaone_attestation", cursor)
        found = []
        for record in records:
            meta, where = _metadata(record), _split(record.partition_key)
            if meta.get("attested") is not True or not where:
                continue
            figures = _latest_metadata(context.instance, "evaluation_report", record.partition_key)
            found.append(core.deltaone_alert(where[0], where[1], meta.get("uid"), figures, meta.get("explorer")))
        errors = alerts.deliver(found, config, context.log)
        return _finish(len(found), errors, initialized, cursor)

    return [run_failure_alert, anomaly_alerts, deltaone_alerts]
