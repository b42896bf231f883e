"""A distributed executor for real (issue 19): the optimization job's steps on Celery workers.

Redis (Debian's `redis-server`) is the broker and result backend; two `dagster-celery` workers,
started with ``deploy/dagster-celery.yaml`` unchanged, each run in a folder of their own with
``TELEPROMPT_EXECUTOR=celery``; a third folder is the host that launches the run (`teleprompt run`).
The three share no path: steps hand their outputs over through moto's S3 server
(``TELEPROMPT_STORAGE_URL``), MLflow artifacts go through `mlflow server`'s proxy into the bucket, and
the Dagster instance is PostgreSQL (``deploy/dagster.yaml``). The same definitions load everywhere;
only the environment chooses the executor.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from datetime import date
from pathlib import Path

import pytest

from teleprompt_assets_tests.conftest import REPO, small_window_config
from teleprompt_assets_tests.reliability import UNSET
from teleprompt_assets_tests.servers import mlflow_server, postgres, redis_server, s3_server, start_group, stop_group
from teleprompt_assets_tests.test_daemon import BIN, _descendants

pytestmark = pytest.mark.e2e  # starts servers or separate processes: `make test-e2e`

PROGRAM = "ticket_router"
BUCKET = "teleprompt"
END = date(2026, 9, 12)
ATTESTER_KEY = "0x2b7d4f9a1c3e5b7d9f0a2c4e6b8d1f3a5c7e9b0d2f4a6c8e1b3d5f7a9c0e2b4d"
LM_STEPS = ("compiled_program", "evaluation_report", "contributor_rewards")
TIMEOUT_S = 600


def _host(root: Path, name: str, common: dict[str, str]) -> tuple[Path, dict[str, str]]:
    """A folder standing for a machine: its own TELEPROMPT_HOME, DAGSTER_HOME (deploy/dagster.yaml) and config copy."""
    folder = root / name
    (folder / "dagster").mkdir(parents=True)
    shutil.copy(REPO / "deploy" / "dagster.yaml", folder / "dagster" / "dagster.yaml")
    return folder, common | {"TELEPROMPT_HOME": str(folder / "tp"), "DAGSTER_HOME": str(folder / "dagster"),
                             "TELEPROMPT_CONFIG": str(small_window_config(folder))}


def _cli(env: dict[str, str], cwd: Path, *args: str) -> str:
    proc = subprocess.run([str(BIN / "teleprompt"), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert proc.returncode == 0, f"teleprompt {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("celery")
    started = time.perf_counter()
    workers: list[subprocess.Popen] = []
    with postgres() as pg, s3_server(work, buckets=(BUCKET,)) as s3, redis_server(work) as redis:
        server_dir = work / "mlflow-server"
        server_dir.mkdir()
        with mlflow_server(f"sqlite:///{server_dir / 'mlflow.db'}", server_dir, artifacts_destination=f"s3://{BUCKET}/mlflow", env=s3.env()) as server:
            base = {k: v for k, v in os.environ.items() if k not in UNSET and not k.startswith(("AWS_", "MLFLOW_S3", "TELEPROMPT_", "DAGSTER_"))}
            common = base | s3.env() | {
                "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # dagster-celery starts `celery`
                "DAGSTER_PG_HOST": pg.host, "DAGSTER_PG_PORT": str(pg.port), "DAGSTER_PG_DB": "dagster",
                "DAGSTER_PG_USERNAME": "dagster", "DAGSTER_PG_PASSWORD": pg.passwords["dagster"], "MLFLOW_TRACKING_URI": server.url, "TELEPROMPT_LOCK_URL": pg.url("dagster"),
                "TELEPROMPT_STORAGE_URL": f"s3://{BUCKET}/storage", "TELEPROMPT_ATTESTER_KEY": ATTESTER_KEY, "TELEPROMPT_EXECUTOR": "celery",
                "TELEPROMPT_CELERY_BROKER": f"{redis}/0", "TELEPROMPT_CELERY_BACKEND": f"{redis}/1",
            }
            try:
                hosts = {}
                for i in (1, 2):
                    folder, env = _host(work, f"worker-{i}", common)
                    hosts[f"worker-{i}"] = folder
                    workers.append(start_group([str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app", "-y", str(REPO / "deploy" / "dagster-celery.yaml"),
                                           "--name", f"teleprompt-{i}", "-l", "info", "--", "--concurrency=1"], env, folder, folder / "worker.log"))
                for i, proc in enumerate(workers, 1):
                    log = hosts[f"worker-{i}"] / "worker.log"
                    deadline = time.monotonic() + 120
                    while "ready." not in log.read_text(errors="replace"):
                        assert proc.poll() is None and time.monotonic() < deadline, f"worker {i} not ready:\n{log.read_text()[-3000:]}"
                        time.sleep(0.25)
                ready_s = time.perf_counter() - started
                runner, env = _host(work, "runner", common)
                _cli(env, runner, "seed", "--program", PROGRAM, "--end", END.isoformat(), "--days", "2", "--per-day", "20")
                worker_pids = {i: {p.pid, *_descendants(p.pid)} for i, p in enumerate(workers, 1)}
                mark = time.perf_counter()
                out = _cli(env, runner, "run", "--program", PROGRAM, "--date", END.isoformat())
                run_s = time.perf_counter() - mark
                worker_pids = {i: pids | set(_descendants(workers[i - 1].pid)) for i, pids in worker_pids.items()}
                yield {"work": work, "runner": runner, "env": env, "out": out, "hosts": hosts, "worker_pids": worker_pids, "s3": s3,
                       "ready_s": ready_s, "run_s": run_s, "pg": pg}
            finally:
                for proc in workers:
                    stop_group(proc)


def _step_starts(cluster, run_id: str) -> dict[str, int]:
    """Step key -> the pid that ran it, from the run's STEP_START events in the PostgreSQL instance."""
    import dagster as dg

    saved = dict(os.environ)
    os.environ.update({k: v for k, v in cluster["env"].items() if k.startswith("DAGSTER_PG_")})
    try:
        with dg.DagsterInstance.from_config(cluster["env"]["DAGSTER_HOME"]) as instance:
            return {e.dagster_event.step_key: e.dagster_event.pid for e in instance.all_logs(run_id)
                    if e.dagster_event is not None and e.dagster_event.event_type_value == "STEP_START"}
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_the_lm_bound_steps_ran_on_the_celery_workers(cluster):
    line = cluster["out"].strip()
    assert len(line.splitlines()) == 1 and "@champion" in line, line
    run_id = re.search(r"run ([0-9a-f-]{36})", line).group(1)
    starts = _step_starts(cluster, run_id)
    on = {step: next((w for w, pids in cluster["worker_pids"].items() if pid in pids), None) for step, pid in starts.items()}
    assert all(on.values()), f"steps not run by a worker: {on}"
    for step in LM_STEPS:
        assert any(k.startswith(step) for k in on), (step, sorted(on))
    by_worker = {w: sorted(s for s, x in on.items() if x == w) for w in cluster["worker_pids"]}
    print(f"\ncelery: workers ready in {cluster['ready_s']:.1f} s; run {run_id[:8]} in {cluster['run_s']:.1f} s; steps by worker {by_worker}")


def test_the_workers_share_no_folder(cluster):
    """Outputs crossed between workers through the bucket; no worker folder holds storage or artifacts."""
    for folder in cluster["hosts"].values():
        local = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        assert not [f for f in local if f.startswith(("tp/storage/", "tp/artifacts/"))], local
    assert cluster["s3"].bytes_under(BUCKET, "storage/compiled_program/")[0] >= 1
