"""``make demo``: seed a week of traffic, materialize the graph for the latest day, summarize.

Runs through a persistent Dagster instance (``DAGSTER_HOME``) so ``make ui`` shows the same runs.
"""

import os
import time
from pathlib import Path
from datetime import datetime, timedelta, timezone

import dagster as dg

from teleprompt_assets.attest import verify_bundle
from teleprompt_assets.defs.partitions import DATE, PROGRAM
from teleprompt_assets.programs import load_project
from teleprompt_assets.settings import Settings, ensure_home


def run_partition(defs: dg.Definitions, program: str, day: str, instance: dg.DagsterInstance, job_name: str | None = None) -> dict:
    """Materialize one program × day with a job (default: the whole graph); outputs by asset name."""
    from teleprompt_assets.definitions import OPTIMIZE_JOB

    job = defs.resolve_job_def(job_name or OPTIMIZE_JOB)
    result = job.execute_in_process(instance=instance, partition_key=dg.MultiPartitionKey({DATE: day, PROGRAM: program}), raise_on_error=False)
    if not result.success:
        failed = [e.step_key for e in result.all_events if e.is_step_failure]
        checks = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
        reasons = [f"{c.check_name}: {c.description}" for c in checks if not c.passed and c.description]
        raise RuntimeError(f"run {result.run_id} failed at {', '.join(failed) or 'unknown step'}" + (f" ({'; '.join(reasons)})" if reasons else ""))
    outputs = {}
    for event in result.all_events:
        if event.is_successful_output:
            step_output = event.step_output_data
            name = event.node_name if step_output.output_name == "result" else step_output.output_name
            outputs[name] = result.output_for_node(event.node_name, step_output.output_name)
    outputs["run_id"] = result.run_id
    return outputs


def ensure_dagster_home(path: Path) -> None:
    """A local instance with telemetry off; PostgreSQL storage is configured here when scaling out."""
    path.mkdir(parents=True, exist_ok=True)
    config = path / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")


def demo(settings: Settings, days: int = 7, per_day: int = 40) -> list[dict]:
    """Seed every sample program (once: a re-run reuses the traffic) and run each for the latest day."""
    ensure_home(settings)
    os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home))
    ensure_dagster_home(settings.dagster_home)
    _, specs = load_project(settings.config_path)
    end = (datetime.now(timezone.utc) - timedelta(days=1)).date()
    from teleprompt_assets.definitions import INGEST_JOB, build_definitions
    from teleprompt_assets.seed import SEEDERS, seed_program
    from teleprompt_assets.tracking import connect, experiment_id
    from teleprompt_assets.traces import count_by_day

    defs = build_definitions()
    client = connect(settings)
    summaries = []
    with dg.DagsterInstance.get() as instance:
        for name in [n for n in specs if n in SEEDERS]:
            spec = specs[name]
            window = [(end - timedelta(days=i)).isoformat() for i in reversed(range(days))]
            started = time.perf_counter()
            already = sum(count_by_day(client, experiment_id(client, settings, spec.config.experiment), window).values())
            seeded = seed_program(settings, spec, end, days=days, per_day=per_day) if not already else None
            seed_s = time.perf_counter() - started
            for day in window[:-1]:
                run_partition(defs, name, day, instance, INGEST_JOB)
            out = run_partition(defs, name, end.isoformat(), instance)
            att = out["deltaone_attestation"]
            summaries.append({
                "program": name, "window": window, "seeded": seeded.traces if seeded else 0, "reused": already,
                "seed_seconds": seed_s, "pipeline_seconds": time.perf_counter() - started - seed_s, "day": end.isoformat(), "outputs": out,
                "bundle_problems": verify_bundle(Path(att["bundle"]), att["attester"]) if att.get("attested") else None,
            })
    return summaries
