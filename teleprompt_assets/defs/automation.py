"""Automation: a daily schedule for yesterday's partition, and a sensor that reacts to new traces.

Daily partitions close at midnight UTC. The schedule runs each program on the day that just closed;
the sensor re-counts a lookback window of closed days so traces that arrive late for an older day
trigger a re-run of that day (run keys carry the count, so a count is acted on once).
"""


import json
from datetime import datetime, timedelta, timezone

import dagster as dg

from teleprompt_assets.defs.partitions import DATE, PROGRAM
from teleprompt_assets.defs.resources import TelepromptResource
from teleprompt_assets.traces import count_by_day

LOOKBACK_DAYS = 3
MIN_NEW_TRACES = 1


def _request(program: str, day: str, tag: str) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"{program}|{day}|{tag}",
        partition_key=dg.MultiPartitionKey({DATE: day, PROGRAM: program}),
        tags={"teleprompt/program": program, "teleprompt/trigger": tag.split(":")[0]},
    )


def build_automation(job, programs: list[str], first_day: str) -> tuple[dg.ScheduleDefinition, dg.SensorDefinition]:
    @dg.schedule(job=job, cron_schedule="0 1 * * *", execution_timezone="UTC", name="daily_optimization")
    def daily_optimization(context: dg.ScheduleEvaluationContext):
        """At 01:00 UTC, optimize every program on the day that just closed."""
        day = (context.scheduled_execution_time.astimezone(timezone.utc) - timedelta(days=1)).date().isoformat()
        for program in programs:
            yield _request(program, day, f"schedule:{day}")

    @dg.sensor(job=job, name="new_traces_sensor", minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.STOPPED)
    def new_traces_sensor(context: dg.SensorEvaluationContext, teleprompt: TelepromptResource):
        """Re-counts the last closed days per program; a day with new traces is re-materialized."""
        cursor = json.loads(context.cursor) if context.cursor else {}
        today = datetime.now(timezone.utc).date()
        days = [d for d in ((today - timedelta(days=i)).isoformat() for i in range(1, LOOKBACK_DAYS + 1)) if d >= first_day]
        client = teleprompt.client()
        requests = []
        for program in programs:
            spec = teleprompt.spec(program)
            counts = count_by_day(client, teleprompt.experiment_id(client, spec.config.experiment), days)
            seen = cursor.get(program, {})
            for day, count in sorted(counts.items()):
                if count - seen.get(day, 0) >= MIN_NEW_TRACES:
                    requests.append(_request(program, day, f"traces:{count}"))
                    seen[day] = count
            cursor[program] = {d: c for d, c in seen.items() if d in days}
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor, sort_keys=True))

    return daily_optimization, new_traces_sensor
