"""Daemon-driven automation, end to end, with the deployment's own files (issue 19).

PostgreSQL (Debian's), an S3-compatible server (moto's), `mlflow server` on PostgreSQL with its
artifacts proxied into the bucket, a Dagster gRPC code server, `dagster-daemon` and
`dagster-webserver`, all from an unchanged copy of ``deploy/dagster.yaml``. New traces arrive for two
closed days; the new-traces sensor, started from the webserver's API as a user would start it, fires
through the daemon; its runs are queued and dequeued one at a time (one run per program, the
deployment's tag limit). Mid-run the test kills the daemon with SIGKILL, then the run worker and its
step processes (a lost machine). The code server notices the dead worker and fails the run; the
restarted daemon retries it (``run_retries`` in ``deploy/dagster.yaml``), and both days complete with
one model version each and no second attestation.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from teleprompt_assets_tests.conftest import REPO, small_window_config
from teleprompt_assets_tests.reliability import UNSET
from teleprompt_assets_tests.servers import free_port, graphql, mlflow_server, postgres, s3_server, start_group, stop_group
from teleprompt_assets_tests.test_ui import dagster_location_loaded, wait_until

pytestmark = pytest.mark.e2e  # starts servers or separate processes: `make test-e2e`

BIN = Path(sys.executable).parent
PROGRAM = "ticket_router"
MODEL = f"teleprompt-{PROGRAM}"
BUCKET = "teleprompt"
ATTESTER_KEY = "0x6a2f4c8e1b3d5f7a9c0e2b4d6f8a1c3e5b7d9f0a2c4e6b8d1f3a5c7e9b0d2f48"
TODAY = datetime.now(UTC).date()
DAYS = [(TODAY - timedelta(days=i)).isoformat() for i in (2, 1)]  # two closed days within the sensor's lookback
TIMEOUT_S = 420
SENSOR = {"repositoryLocationName": "teleprompt_assets", "repositoryName": "__repository__", "sensorName": "new_traces_sensor"}


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


def _descendants(pid: int) -> list[int]:
    out = []
    for child in _children(pid):
        out += [child, *_descendants(child)]
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


STEPS = """query($id: ID!) { logsForRun(runId: $id) { ... on EventConnection { events { __typename ... on StepEvent { stepKey } } } } }"""
RUNS = """{ runsOrError { ... on Runs { results { runId status tags { key value } } } } }"""
EVENTS = """query($id: ID!) { logsForRun(runId: $id) { ... on EventConnection { events { __typename ... on MessageEvent { message } } } } }"""


def _runs(url: str) -> list[dict]:
    runs = graphql(url, RUNS)["runsOrError"]["results"]
    return [r | {"tags": {t["key"]: t["value"] for t in r["tags"]}} for r in runs]


def _wait(what: str, ready, timeout_s: float = TIMEOUT_S, poll_s: float = 1.0, state=lambda: ""):
    deadline = time.monotonic() + timeout_s
    while (found := ready()) is None or found is False:
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout_s} s; {state()}")
        time.sleep(poll_s)
    return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("daemon")
    started = time.perf_counter()
    procs: dict[str, subprocess.Popen] = {}
    with postgres() as pg, s3_server(work, buckets=(BUCKET,)) as s3:
        server_dir = work / "mlflow-server"
        server_dir.mkdir()
        with mlflow_server(pg.url("mlflow"), server_dir, artifacts_destination=f"s3://{BUCKET}/mlflow", env=s3.env()) as server:
            dagster_home = work / "dagster"
            dagster_home.mkdir()
            shutil.copy(REPO / "deploy" / "dagster.yaml", dagster_home / "dagster.yaml")
            code_port, web_port = free_port(), free_port()
            (work / "workspace.yaml").write_text(
                f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {code_port}\n      location_name: teleprompt_assets\n")
            base = {k: v for k, v in os.environ.items() if k not in UNSET and not k.startswith(("AWS_", "MLFLOW_S3", "TELEPROMPT_", "DAGSTER_"))}
            env = base | s3.env() | {
                "DAGSTER_HOME": str(dagster_home), "DAGSTER_PG_HOST": pg.host, "DAGSTER_PG_PORT": str(pg.port), "DAGSTER_PG_DB": "dagster",
                "DAGSTER_PG_USERNAME": "dagster", "DAGSTER_PG_PASSWORD": pg.passwords["dagster"], "MLFLOW_TRACKING_URI": server.url, "TELEPROMPT_LOCK_URL": pg.url("dagster"),
                "TELEPROMPT_HOME": str(work / "tp"), "TELEPROMPT_CONFIG": str(small_window_config(work)),
                "TELEPROMPT_STORAGE_URL": f"s3://{BUCKET}/storage", "TELEPROMPT_ATTESTER_KEY": ATTESTER_KEY,
                "TELEPROMPT_DAGSTER_UI_URL": f"http://127.0.0.1:{web_port}",
            }
            workspace = str(work / "workspace.yaml")
            try:
                procs["code server"] = start_group([str(BIN / "dagster"), "api", "grpc", "-m", "teleprompt_assets.definitions", "-a", "defs",
                                               "-h", "127.0.0.1", "-p", str(code_port), "--location-name", "teleprompt_assets"],
                                              env, work, work / "code-server.log")
                procs["webserver"] = start_group([str(BIN / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1", "-p", str(web_port)], env, work, work / "webserver.log")
                url = f"http://127.0.0.1:{web_port}"
                wait_until(lambda: dagster_location_loaded(url), lambda: None, "webserver and code server",
                           lambda: (work / "webserver.log").read_text() + (work / "code-server.log").read_text(), TIMEOUT_S)
                daemon = [str(BIN / "dagster-daemon"), "run", "-w", workspace]
                procs["daemon"] = start_group(daemon, env, work, work / "daemon.log")
                yield {"work": work, "env": env, "url": url, "procs": procs, "daemon_cmd": daemon, "s3": s3, "server": server,
                       "started": started, "ready_s": time.perf_counter() - started}
            finally:
                for proc in procs.values():
                    stop_group(proc)


def test_the_sensor_runs_the_days_through_the_daemon_and_survives_kills(stack):
    from mlflow import MlflowClient

    env, url, work, procs = stack["env"], stack["url"], stack["work"], stack["procs"]
    mark = time.perf_counter()
    seeded = subprocess.run([str(BIN / "teleprompt"), "seed", "--program", PROGRAM, "--end", DAYS[-1], "--days", "2", "--per-day", "20"],
                            env=env, cwd=work, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert seeded.returncode == 0, seeded.stderr[-3000:]
    seed_s = time.perf_counter() - mark

    started = graphql(url, "mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) { __typename ... on Sensor { sensorState { status } } "
                           "... on PythonError { message } } }", s=SENSOR)["startSensor"]
    assert started["__typename"] == "Sensor" and started["sensorState"]["status"] == "RUNNING", started

    # the sensor's first tick requests both days; the tag limit lets one run of the program go at a time
    first = _wait("a run started by the sensor", lambda: next((r for r in _runs(url) if r["status"] == "STARTED"), None), poll_s=0.5)
    assert first["tags"].get("dagster/sensor_name") == "new_traces_sensor", first
    sensed_s = time.perf_counter() - mark
    runs = _runs(url)
    assert len(runs) == 2 and {r["status"] for r in runs} == {"STARTED", "QUEUED"}, runs

    # mid-run, inside the per-program fan-out (the hardest place to resume): the daemon dies, then the
    # machine running the run (worker and its step processes)
    _wait("a compile step running", lambda: any("compile_program" in (e.get("stepKey") or "") for e in graphql(url, STEPS, id=first["runId"])["logsForRun"]["events"]
                                               if e["__typename"] == "ExecutionStepStartEvent"), 240, 0.25)
    procs["daemon"].send_signal(signal.SIGKILL)
    procs["daemon"].wait(timeout=10)
    workers = [p for p in _children(procs["code server"].pid) if "resource_tracker" not in _cmdline(p)]
    assert workers, f"no run worker under the code server: {[_cmdline(p) for p in _children(procs['code server'].pid)]}"
    victims = [d for w in workers for d in [*_descendants(w), w]]
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    killed_at = time.perf_counter()
    failed = _wait("the killed run marked failed", lambda: next((r for r in _runs(url) if r["runId"] == first["runId"] and r["status"] == "FAILURE"), None), 120)
    detected_s = time.perf_counter() - killed_at
    messages = [e.get("message", "") for e in graphql(url, EVENTS, id=failed["runId"])["logsForRun"]["events"]]
    assert any("exited with code -9" in m or "was killed" in m for m in messages), [m for m in messages if "xit" in m or "ail" in m or "kill" in m]

    procs["daemon"] = start_group(stack["daemon_cmd"], env, work, work / "daemon.log")
    done = _wait("both days done", lambda: (lambda rs: rs if sum(r["status"] == "SUCCESS" for r in rs) == 2 else None)(_runs(url)),
                 state=lambda: f"runs {[(r['runId'][:8], r['status'], r['tags'].get('dagster/parent_run_id', '')[:8]) for r in _runs(url)]}; "
                               f"daemon log: {(work / 'daemon.log').read_text()[-3000:]}")
    total_s = time.perf_counter() - mark
    retries = [r for r in done if r["tags"].get("dagster/parent_run_id") == first["runId"]]
    assert len(retries) == 1 and retries[0]["status"] == "SUCCESS", done
    rerun = {e.get("stepKey") for e in graphql(url, STEPS, id=retries[0]["runId"])["logsForRun"]["events"] if e["__typename"] == "ExecutionStepStartEvent"}
    assert retries[0]["tags"].get("dagster/retry_strategy") == "ALL_STEPS" and "raw_traces" in rerun, (retries[0]["tags"], rerun)  # every step again
    assert not [r for r in done if r["status"] not in ("SUCCESS", "FAILURE")], done

    client = MlflowClient(tracking_uri=stack["server"].url, registry_uri=stack["server"].url)
    versions = client.search_model_versions(f"name = '{MODEL}'")
    windows = sorted(v.tags["window"] for v in versions)
    assert len(windows) == len(set(windows)) == 2, windows  # one version per day, the killed run's retry included
    uids = [v.tags.get("attestation_uid") for v in versions if v.tags.get("attestation_uid")]
    assert len(uids) == len(set(uids)) <= 2
    outbox = work / "tp" / "outbox" / PROGRAM
    assert len(list(outbox.iterdir()) if outbox.exists() else []) == len(uids)
    print(f"\ndaemon stack up in {stack['ready_s']:.1f} s; seeded in {seed_s:.1f} s; sensor run started {sensed_s:.1f} s after seeding began; "
          f"killed daemon + {len(victims)} worker processes of run {first['runId'][:8]}; failure recorded {detected_s:.1f} s later; "
          f"retry {retries[0]['runId'][:8]} and the other day done {total_s:.1f} s after seeding began; {len(versions)} versions, {len(uids)} attestations")
