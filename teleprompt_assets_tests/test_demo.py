"""`make demo` as the README runs it, then `make ui` on the same state (issues 14 and 18).

The demo must seed, optimize, register and attest both sample programs; a second `make demo` must
add no model version and no bundle; and its runs must come from the code location `make ui` serves,
so that Dagster's "Re-execute" (the UI's ``launchPipelineReexecution`` mutation, sent here as the
button sends it) runs them again instead of warning that they came from another location.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from teleprompt_assets_tests.servers import free_port, graphql
from teleprompt_assets_tests.test_ui import REPO, START_TIMEOUT_S, TOKEN_VAR, UNSET, dagster_location_loaded, kill_all, wait_until

pytestmark = pytest.mark.e2e  # starts servers or separate processes: `make test-e2e`

PROGRAMS = ("outreach_reply", "ticket_router")
RUN_TIMEOUT_S = 300
REEXECUTE = """mutation($parent: String!) {
  launchPipelineReexecution(reexecutionParams: {parentRunId: $parent, strategy: ALL_STEPS}) {
    __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } ... on InvalidSubsetError { message }
  }
}"""
RUNS = "{ runsOrError { ... on Runs { results { runId jobName status repositoryOrigin { repositoryLocationName repositoryName } } } } }"
STATUS = "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"


def _make(target: str, env: dict[str, str], log: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(["make", target], cwd=REPO, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    assert proc.returncode == 0, f"make {target} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _state(home: Path) -> dict[str, list[str]]:
    """Bundles per program in the outbox, and the uids the demo printed."""
    return {p: sorted(b.name for b in (home / "outbox" / p).iterdir()) for p in PROGRAMS}


@pytest.mark.skipif(not shutil.which("make"), reason="make is part of the documented setup")
def test_make_demo_twice_then_reexecute_its_runs_from_make_ui(tmp_path: Path):
    home = tmp_path / "tp"
    token = uuid.uuid4().hex
    dagster_port, mlflow_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in {*UNSET, "DAGSTER_HOME", "TELEPROMPT_HOME", "TELEPROMPT_CONFIG", "TELEPROMPT_START_DATE"}} | {
        "TELEPROMPT_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
        "TELEPROMPT_DAGSTER_UI_PORT": str(dagster_port), "TELEPROMPT_MLFLOW_UI_PORT": str(mlflow_port), TOKEN_VAR: token,
    }
    started = time.monotonic()
    first = _make("demo", env, tmp_path / "demo-1.log")
    first_s = time.monotonic() - started
    uids = re.findall(r"attestation uid\s+(0x[0-9a-f]{64})", first.stdout)
    assert len(uids) == 2 and first.stdout.count("verifies          yes") == 2, first.stdout
    assert "DEBUG" not in first.stdout + first.stderr and "Traceback" not in first.stderr
    bundles = _state(home)
    assert sorted(u for b in bundles.values() for u in b) == sorted(uids)

    mark = time.monotonic()
    second = _make("demo", env, tmp_path / "demo-2.log")
    second_s = time.monotonic() - mark
    assert re.findall(r"attestation uid\s+(0x[0-9a-f]{64})", second.stdout) == uids and _state(home) == bundles
    assert second.stdout.count("v1 @champion") == 2, second.stdout

    out, err = tmp_path / "make-ui.out", tmp_path / "make-ui.err"
    log = lambda: out.read_text(errors="replace")[-2000:] + "\n--- stderr ---\n" + err.read_text(errors="replace")
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        ui = subprocess.Popen(["make", "ui"], cwd=REPO, env=env, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{dagster_port}"
        wait_until(lambda: dagster_location_loaded(url), lambda: None if ui.poll() is None else f"exited with {ui.returncode}", "make ui", log, START_TIMEOUT_S)
        runs = graphql(url, RUNS)["runsOrError"]["results"]
        assert {r["jobName"] for r in runs} == {"ingest_traces", "optimize_program"} and len(runs) == 4, runs
        for run in runs:  # what the UI matches against its workspace before it offers "Re-execute" without a warning
            assert run["status"] == "SUCCESS" and run["repositoryOrigin"] == {"repositoryLocationName": "teleprompt_assets", "repositoryName": "__repository__"}, run
        parent = next(r["runId"] for r in runs if r["jobName"] == "optimize_program")
        mark = time.monotonic()
        launched = graphql(url, REEXECUTE, parent=parent)["launchPipelineReexecution"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        child = launched["run"]["runId"]
        status = None
        while time.monotonic() - mark < RUN_TIMEOUT_S:
            status = graphql(url, STATUS, id=child)["runOrError"]["status"]
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                break
            time.sleep(1)
        assert status == "SUCCESS", f"the re-execution {child} ended {status}:\n{log()}"
        assert _state(home) == bundles  # re-executing the day adds no attestation (nor, below, a version)
        from mlflow import MlflowClient

        store = f"sqlite:///{home / 'mlflow.db'}"
        client = MlflowClient(tracking_uri=store, registry_uri=store)  # explicit: an earlier test in this process may have set MLflow's global registry URI
        versions = {p: [(v.version, v.tags.get("window"), v.tags.get("dagster_run_id", "")[:8], v.tags.get("program_hash", "")[:10])
                        for v in client.search_model_versions(f"name = 'teleprompt-{p}'")] for p in PROGRAMS}
        assert all(len(v) == 1 for v in versions.values()), f"{versions}; the re-execution was {child}"
        assert all(client.get_model_version_by_alias(f"teleprompt-{p}", "champion").version in (1, "1") for p in PROGRAMS), versions
        print(f"make demo {first_s:.0f} s, again {second_s:.0f} s; re-executed {parent[:8]} from the UI's API in {time.monotonic() - mark:.0f} s "
              f"as {child[:8]}; versions {versions}")
    finally:
        if ui.poll() is None:
            os.killpg(ui.pid, signal.SIGINT)
            try:
                ui.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(ui.pid, signal.SIGKILL)
        kill_all(token)
