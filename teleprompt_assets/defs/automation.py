"""Automation: the optimization-cycle schedule (daily, weekly or monthly) and the new-traces sensor.

Daily partitions close at midnight UTC. The schedule runs the day after a cycle's last day closes and
optimizes every program on that day in one run (each program's LM-bound steps run in parallel, see
``defs/fanout.py``); ``training_set`` reaches back ``window_days`` from it. Trigger conditions
(``automation.min_new_traces`` over the cycle's period, ``automation.min_window_traces`` over the
training window) skip a program with a visible reason. The sensor re-counts a lookback
window of closed days so traces that arrive late for an older day trigger a re-run of that day
(run keys carry the count, so a count is acted on once). Settings: docs/operations.md.
"""


import json
import time
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from teleprompt_assets.core.config import AutomationConfig
from teleprompt_assets.core.window import Window
from teleprompt_assets.defs.partitions import DATE, PROGRAM, contiguous, run_tags
from teleprompt_assets.defs.resources import TelepromptResource
from teleprompt_assets.ingest.traces import count_by_day, count_day

LOOKBACK_DAYS = 3  # defaults; automation.sensor overrides them
MIN_NEW_TRACES = 1
SCANS = "_scans"  # cursor key of unfinished day counts, resumed by the next tick
NEXT = "_next"  # cursor key: the (program, day) the next tick starts from


def _request(program: str, day: str, tag: str, cycle: str | None = None) -> dg.RunRequest:
    tags = {"teleprompt/program": program, "teleprompt/trigger": tag.split(":")[0]}
    if cycle:
        tags["teleprompt/cycle"] = cycle
    return dg.RunRequest(run_key=f"{program}|{day}|{tag}", partition_key=dg.MultiPartitionKey({DATE: day, PROGRAM: program}), tags=tags)


def _cycle_request(partitions: dg.PartitionsDefinition, programs: list[str], day: str, cycle: str) -> dg.RunRequest:
    """One run for neighbouring programs of a cycle: they optimize side by side in it."""
    if len(programs) == 1:
        return _request(programs[0], day, f"schedule:{day}", cycle)
    tags = {"teleprompt/programs": ",".join(programs), "teleprompt/trigger": "schedule", "teleprompt/cycle": cycle}
    return dg.RunRequest(run_key=f"{'+'.join(programs)}|{day}|schedule:{day}", tags=tags | run_tags(partitions, programs, day))


def skip_reasons(config: AutomationConfig, day: date, window_days: int, counts: dict[str, int]) -> str | None:
    """Why a program's cycle ending on ``day`` is skipped, given its traces per day; None: run it."""
    new = sum(counts.get(d.isoformat(), 0) for d in config.period(day))
    window = sum(counts.get(d, 0) for d in Window.ending(day, window_days).dates())
    problems = []
    if new < config.min_new_traces:
        problems.append(f"{new} new traces in the {config.cycle} period < min_new_traces={config.min_new_traces}")
    if window < config.min_window_traces:
        problems.append(f"{window} traces in the {window_days}-day window < min_window_traces={config.min_window_traces}")
    return "; ".join(problems) or None


def build_automation(job, partitions: dg.PartitionsDefinition, programs: list[str], first_day: str, window_days: int = 7,
                     config: AutomationConfig | None = None) -> tuple[dg.ScheduleDefinition, dg.SensorDefinition]:
    config = config or AutomationConfig()
    lookback, min_new = config.sensor.lookback_days, config.sensor.min_new_traces
    counting = config.min_new_traces > 0 or config.min_window_traces > 0

    @dg.schedule(job=job, cron_schedule=config.cron, execution_timezone="UTC", name=config.schedule_name,
                 description=f"{config.cycle} cycle at {config.hour:02d}:00 UTC: every program, on the cycle's last (closed) day, in one run.")
    def optimization_cycle(context: dg.ScheduleEvaluationContext, teleprompt: TelepromptResource):
        day = (context.scheduled_execution_time.astimezone(UTC) - timedelta(days=1)).date()
        if day.isoformat() < first_day:
            return dg.SkipReason(f"{day} is before the first partition {first_day}")
        due, skipped = [], []
        if counting:
            client = teleprompt.client()
            days = sorted({d.isoformat() for d in config.period(day)} | set(Window.ending(day, window_days).dates()))
            days = [d for d in days if d >= first_day]
        for program in programs:
            if counting:
                counts = count_by_day(client, teleprompt.experiment_id(client, teleprompt.spec(program).config.experiment), days)
                reason = skip_reasons(config, day, window_days, counts)
                if reason:
                    skipped.append(f"{program}: {reason}")
                    context.log.info(f"skipping {program} {day}: {reason}")
                    continue
            due.append(program)
        requests = [_cycle_request(partitions, group, day.isoformat(), config.cycle) for group in contiguous(programs, due)]
        if not requests:
            return dg.SkipReason(f"{config.cycle} cycle for {day} skipped: " + " | ".join(skipped))
        return requests

    @dg.sensor(job=job, name="new_traces_sensor", minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.STOPPED,
               description=f"Re-runs a closed day of the last {lookback} once it has >= {min_new} new traces.")
    def new_traces_sensor(context: dg.SensorEvaluationContext, teleprompt: TelepromptResource):
        """Re-counts the last closed days per program; a day with enough new traces is re-materialized.

        Counting lists traces, so a tick stops after ``tick_budget_s`` and the next one resumes the
        unfinished counts from the cursor (``_scans``): ticks stay short on any store size, and a
        large day is decided a few ticks later instead.
        """
        cursor = json.loads(context.cursor) if context.cursor else {}
        scans, start = cursor.pop(SCANS, {}), cursor.pop(NEXT, 0)
        today = datetime.now(UTC).date()
        days = [d for d in ((today - timedelta(days=i)).isoformat() for i in range(1, lookback + 1)) if d >= first_day]
        keys = [(program, day) for program in programs for day in days]
        start = start % len(keys) if keys else 0
        deadline = time.monotonic() + config.sensor.tick_budget_s
        client = teleprompt.client()
        seen = {program: cursor.get(program, {}) for program in programs}
        requests, pending, unfinished, kept = [], [], [], {}
        for program, day in keys[start:] + keys[:start]:  # round robin: resume where the last tick stopped
            key = f"{program}|{day}"
            if unfinished or (key != f"{keys[start][0]}|{keys[start][1]}" and time.monotonic() >= deadline):
                unfinished.append(key)
                if key in scans:
                    kept[key] = scans[key]
                continue
            exp = teleprompt.experiment_id(client, teleprompt.spec(program).config.experiment)
            count, scan = count_day(client, exp, day, scans.get(key), deadline)
            if count is None:
                unfinished.append(key)
                kept[key] = scan
                continue
            new = count - seen[program].get(day, 0)
            if new >= min_new:
                requests.append(_request(program, day, f"traces:{count}"))
                seen[program][day] = count
            elif new > 0:
                pending.append(f"{program} {day}: {new} new")
        for program in programs:
            cursor[program] = {d: c for d, c in seen[program].items() if d in days}
        if unfinished:
            cursor[NEXT] = next(i for i, (p, d) in enumerate(keys) if f"{p}|{d}" == unfinished[0])
        if kept:
            cursor[SCANS] = kept
        skip = None
        if not requests:
            skip = f"no day with >= {min_new} new traces in the last {lookback} closed days" + (f" (pending: {', '.join(pending)})" if pending else "")
            if unfinished:
                skip += f"; still counting {', '.join(unfinished)} (resumes next tick)"
        return dg.SensorResult(run_requests=requests, skip_reason=skip, cursor=json.dumps(cursor, sort_keys=True))

    return optimization_cycle, new_traces_sensor
