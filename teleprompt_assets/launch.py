"""Launching runs from Python: one partition in process (tests), the programs of a day through the
multiprocess executor (``teleprompt run``), and ``make demo`` (seed a week of traffic, materialize
the graph for the latest day, summarize).

``teleprompt run`` and ``make demo`` launch their runs as the webserver and the daemon do: from the
code location ``make ui`` serves (``workspace.yaml``'s ``teleprompt_assets``, loaded in its own
code-server process) through the instance's run launcher, so the UI can re-execute them like any
run it launched itself. Runs go to a persistent instance (``DAGSTER_HOME``) so ``make ui`` shows
them. Every program of the day optimizes in one run of ``optimize_program`` under its multiprocess
executor, as the daily schedule launches it.
"""

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
from dagster import __version__ as dagster_version
from dagster._core.workspace.context import WorkspaceProcessContext, WorkspaceRequestContext
from dagster._core.workspace.load_target import ModuleTarget

from teleprompt_assets.attest.bundles import verify_bundle
from teleprompt_assets.core.settings import Settings, ensure_home
from teleprompt_assets.core.spec import load_project
from teleprompt_assets.defs.io import TableIOManager
from teleprompt_assets.defs.partitions import contiguous, key_of, run_tags

LOCATION = "teleprompt_assets"  # workspace.yaml's location_name
POLL_S = 0.5


def _failure(result) -> RuntimeError:
    return _failure_of(result.run_id, result.all_events)


def _failure_of(run_id: str, events: Sequence[dg.DagsterEvent]) -> RuntimeError:
    """One line: the failed steps, each with its own reason (a ``dg.Failure``'s description, or the
    error's message), and the description of every failed check."""
    failures = [e for e in events if e.is_step_failure]
    checks = [e.event_specific_data for e in events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    reasons = [f"{e.step_key}: {_step_reason(e)}" for e in failures if _step_reason(e)]
    reasons += [f"{c.check_name}: {c.description}" for c in checks if not c.passed and c.description]
    if not failures:
        reasons += [e.message for e in events if e.event_type_value == "PIPELINE_FAILURE" and e.message]
    failed = [e.step_key for e in failures]
    return RuntimeError(f"run {run_id} failed at {', '.join(failed) or 'unknown step'}" + (f" ({'; '.join(reasons)})" if reasons else ""))


@contextmanager
def served_location(instance: dg.DagsterInstance) -> Iterator[WorkspaceRequestContext]:
    """The code location ``make ui`` serves, in a code server of its own, as ``dagster dev`` loads it."""
    target = ModuleTarget("teleprompt_assets.definitions", "defs", None, LOCATION)
    with WorkspaceProcessContext(instance=instance, workspace_load_target=target, version=dagster_version, code_server_log_level="WARNING") as process:
        workspace = process.create_request_context()
        error = workspace.get_code_location_error(LOCATION)
        if error is not None:
            raise RuntimeError(f"the code location {LOCATION} did not load: {error.message.strip()}")
        yield workspace


def launch_and_wait(workspace: WorkspaceRequestContext, job_name: str, tags: dict[str, str], run_config: dict | None = None) -> str:
    """Create a run of ``job_name`` from the served code location, launch it with the instance's run
    launcher (not its queue: the caller is waiting, not the daemon) and wait for it to finish. Returns
    the run id; a failed run raises with its steps' reasons."""
    instance = workspace.instance
    location = workspace.get_code_location(LOCATION)
    [repo] = location.get_repositories().values()
    job = repo.get_full_job(job_name)
    plan = location.get_execution_plan(job, run_config or {}, step_keys_to_execute=None, known_state=None, instance=instance)
    run = instance.create_run(
        job_name=job_name, run_id=None, run_config=run_config or {}, resolved_op_selection=None, step_keys_to_execute=None,
        op_selection=None, status=None, root_run_id=None, parent_run_id=None, tags=job.tags | tags, job_snapshot=job.job_snapshot,
        execution_plan_snapshot=plan.execution_plan_snapshot, parent_job_snapshot=job.parent_job_snapshot,
        remote_job_origin=job.get_remote_origin(), job_code_origin=job.get_python_origin(), asset_selection=None,
        asset_check_selection=None, asset_graph=repo.asset_graph)
    instance.launch_run(run.run_id, workspace)
    while not (finished := instance.get_run_by_id(run.run_id)).is_finished:
        time.sleep(POLL_S)
    if finished.status != dg.DagsterRunStatus.SUCCESS:
        raise _failure_of(run.run_id, [e.dagster_event for e in instance.all_logs(run.run_id) if e.dagster_event is not None])
    return run.run_id


def _step_reason(event) -> str:
    data = event.event_specific_data
    user = getattr(data, "user_failure_data", None)
    if user is not None and user.description:
        return user.description
    error = getattr(data, "error", None)
    while error is not None and error.cause is not None and (error.cls_name or "").startswith("Dagster"):
        error = error.cause
    return (error.message.strip().splitlines() or [""])[0][:500] if error is not None else ""


def run_partition(defs: dg.Definitions, program: str, day: str, instance: dg.DagsterInstance, job_name: str | None = None) -> dict:
    """Materialize one program × day in this process with a job (default: the whole graph); outputs by asset name."""
    from teleprompt_assets.definitions import OPTIMIZE_JOB

    job = defs.resolve_job_def(job_name or OPTIMIZE_JOB)
    key = key_of(program, day)
    result = job.execute_in_process(instance=instance, partition_key=key, raise_on_error=False)
    if not result.success:
        raise _failure(result)
    outputs = {}
    for node in job.graph.nodes:
        for out in node.definition.output_defs:
            try:
                value = result.output_for_node(node.name, out.name)
            except dg.DagsterInvariantViolationError:  # a check's output, or a node this job did not run
                continue
            outputs[node.name if out.name == "result" else out.name] = value[key] if isinstance(value, dict) and key in value else value
    outputs["run_id"] = result.run_id
    return outputs


def run_programs(programs: list[str], day: str, instance: dg.DagsterInstance, run_config: dict | None = None) -> dict[str, dict]:
    """One run of the optimization job for ``programs`` on ``day``, under its multiprocess executor
    (each program compiles in its own step); outputs by program, then asset name."""
    with served_location(instance) as workspace:
        return _optimize(workspace, programs, day, run_config)


def run_here(program: str, day: str, instance: dg.DagsterInstance, run_config: dict | None = None) -> dict[str, dict]:
    """One program's day in this process, steps one after another; outputs as :func:`run_programs`
    gives them.

    What a launched run pays before its first step (a code server and a run process, each importing
    the project, then a process per step) is several times a small run's own work; here the project
    is imported once (docs/performance.md#fixed-overhead). The run records the origin of the code
    location ``make ui`` serves, as a launched run does, so the UI's "Re-execute" finds its job."""
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.execution.api import create_execution_plan, execute_run
    from dagster._core.remote_origin import RemoteJobOrigin, RemoteRepositoryOrigin

    from teleprompt_assets.definitions import OPTIMIZE_JOB, defs

    job = defs.resolve_job_def(OPTIMIZE_JOB).with_executor_def(dg.in_process_executor)
    [origin] = ModuleTarget("teleprompt_assets.definitions", "defs", None, LOCATION).create_origins()
    remote = RemoteJobOrigin(RemoteRepositoryOrigin(origin, "__repository__"), job.name)
    config = run_config or {}
    tags = job.run_tags | run_tags(job.partitions_def, [program], day)
    run = instance.create_run_for_job(job_def=job, run_config=config, tags=tags, remote_job_origin=remote,
                                      execution_plan=create_execution_plan(InMemoryJob(job), run_config=config, instance_ref=instance.get_ref()))
    result = execute_run(InMemoryJob(job), run, instance)
    if not result.success:
        raise _failure_of(run.run_id, [e.dagster_event for e in instance.all_logs(run.run_id) if e.dagster_event is not None])
    return _stored_outputs(job, [program], day, run.run_id)


def _optimize(workspace: WorkspaceRequestContext, programs: list[str], day: str, run_config: dict | None) -> dict[str, dict]:
    from teleprompt_assets.definitions import OPTIMIZE_JOB, defs

    job_def = defs.resolve_job_def(OPTIMIZE_JOB)
    groups = contiguous(list(job_def.partitions_def.get_partitions_def_for_dimension("program").get_partition_keys()), programs)
    if len(groups) != 1:
        raise ValueError(f"one run holds a range of the sorted programs; {', '.join(programs)} is not one (run {groups} separately)")
    [group] = groups
    run_id = launch_and_wait(workspace, job_def.name, run_tags(job_def.partitions_def, group, day), run_config)
    return _stored_outputs(job_def, group, day, run_id)


def _stored_outputs(job: dg.JobDefinition, programs: list[str], day: str, run_id: str) -> dict[str, dict]:
    """What a finished run of ``job`` stored for each program's day, by asset name, with its run id."""
    from teleprompt_assets.definitions import defs

    io: TableIOManager = defs.resources["io_manager"]
    assets = [key.path[-1] for key in job.asset_layer.executable_asset_keys]
    return {program: {name: io.load(dg.AssetKey(name), key_of(program, day)) for name in assets} | {"run_id": run_id} for program in programs}


def ensure_dagster_home(path: Path) -> None:
    """A local instance with telemetry off; PostgreSQL storage is configured here when scaling out."""
    path.mkdir(parents=True, exist_ok=True)
    config = path / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")


def demo(settings: Settings, days: int = 7, per_day: int = 40, instance: dg.DagsterInstance | None = None, run_config: dict | None = None) -> list[dict]:
    """Seed every sample program (once: a re-run reuses the traffic), ingest the window's earlier days
    in one run, then optimize every program for the latest day in one parallel run. ``instance`` and
    ``run_config`` (e.g. the CLI's quiet logging) default to ``DAGSTER_HOME``'s instance and none."""
    ensure_home(settings)
    os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home))
    ensure_dagster_home(settings.dagster_home)
    _, specs = load_project(settings.config_path)
    end = (datetime.now(UTC) - timedelta(days=1)).date()
    window = [(end - timedelta(days=i)).isoformat() for i in reversed(range(days))]
    from teleprompt_assets.core.tracking import connect, experiment_id
    from teleprompt_assets.definitions import INGEST_JOB, build_definitions
    from teleprompt_assets.ingest.traces import count_by_day
    from teleprompt_assets.samples.seed import SEEDERS, seed_program

    defs = build_definitions()
    client = connect(settings)
    programs = [n for n in sorted(specs) if n in SEEDERS]
    seeding = {}
    for name in programs:
        spec = specs[name]
        started = time.perf_counter()
        already = sum(count_by_day(client, experiment_id(client, settings, spec.config.experiment), window).values())
        seeded = seed_program(settings, spec, end, days=days, per_day=per_day) if not already else None
        seeding[name] = (seeded.traces if seeded else 0, already, time.perf_counter() - started)
    started, outputs = time.perf_counter(), {}
    with instance or dg.DagsterInstance.get() as instance, served_location(instance) as workspace:
        ingest = defs.resolve_job_def(INGEST_JOB)
        for group in contiguous(list(specs), programs):
            if len(window) > 1:
                launch_and_wait(workspace, INGEST_JOB, run_tags(ingest.partitions_def, group, window[0], window[-2]), run_config)
            outputs |= _optimize(workspace, group, end.isoformat(), run_config)
    pipeline_s = time.perf_counter() - started
    summaries = []
    for name in programs:
        out = outputs[name]
        att = out["deltaone_attestation"]
        summaries.append({
            "program": name, "window": window, "seeded": seeding[name][0], "reused": seeding[name][1],
            "seed_seconds": seeding[name][2], "pipeline_seconds": pipeline_s, "day": end.isoformat(), "outputs": out,
            "bundle_problems": verify_bundle(Path(att["bundle"]), att["attester"]) if att.get("attested") else None,
        })
    return summaries
