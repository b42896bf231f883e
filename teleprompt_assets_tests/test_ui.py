"""`make ui` (issue 18): both UIs come up on the ports the environment names, and one Ctrl-C (SIGINT
to the foreground process group, as a terminal sends it) or one SIGTERM to make stops everything
they started (dagster dev, its webserver, daemon and code servers; mlflow ui and its uvicorn server)
within 15 s, without a traceback.

Every process `make ui` starts inherits a random token in its environment, so the test finds them
all in /proc however they were started (the UIs run in process groups of their own) and would see
an orphan that changed its process group or parent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from teleprompt_assets_tests.servers import free_port

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 240
STOP_LIMIT_S = 15
TOKEN_VAR = "TELEPROMPT_UI_TEST_TOKEN"
UNSET = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "TELEPROMPT_LM", "TELEPROMPT_KEYSTORE", "TELEPROMPT_ARTIFACT_ROOT",
         "TELEPROMPT_DAGSTER_UI_URL", "TELEPROMPT_MLFLOW_UI_URL", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")


def http_get(url: str, timeout: float = 5) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read() if response.status == 200 else None
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return None


def dagster_location_loaded(base_url: str) -> bool:
    """The webserver answers and has loaded its code location (what a user waits for before looking)."""
    query = b'{"query": "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"}'
    request = urllib.request.Request(f"{base_url}/graphql", data=query, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            entries = json.loads(response.read())["data"]["workspaceOrError"]["locationEntries"]
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, KeyError, TypeError, ValueError):
        return False
    return bool(entries) and all(e["loadStatus"] == "LOADED" for e in entries)


def wait_until(ready: Callable[[], bool], exited: Callable[[], str | None], what: str, log: Callable[[], str], timeout_s: float) -> float:
    """Poll ``ready`` until true; fail with the log if the process is gone or time runs out. Returns the seconds waited."""
    started = time.monotonic()
    while not ready():
        if (why := exited()) is not None:
            pytest.fail(f"{what}: the process {why} before it was ready:\n{log()[-4000:]}")
        if time.monotonic() - started > timeout_s:
            pytest.fail(f"{what}: not ready after {timeout_s} s:\n{log()[-4000:]}")
        time.sleep(0.25)
    return time.monotonic() - started


def processes_with(token: str) -> dict[int, str]:
    """Live processes (not zombies) whose environment holds ``token``: pid -> command line."""
    found = {}
    needle = f"{TOKEN_VAR}={token}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            found[int(entry.name)] = command
    return found


def kill_all(token: str) -> None:
    """After a failure: SIGKILL whatever this test started, so no server outlives it."""
    for pid in processes_with(token):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.e2e
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the started processes through /proc (Linux)")
@pytest.mark.parametrize("how", ["SIGINT to the process group", "SIGTERM to make"])
def test_make_ui_stops_everything_it_started(tmp_path: Path, how: str):
    make = shutil.which("make")
    assert make, "make is part of the documented setup (`make ui`)"
    token = uuid.uuid4().hex
    dagster_port, mlflow_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in UNSET} | {
        "TELEPROMPT_HOME": str(tmp_path / "tp"), "DAGSTER_HOME": str(tmp_path / "tp" / "dagster"),
        "TELEPROMPT_CONFIG": str(REPO / "teleprompt.yaml"),
        "TELEPROMPT_DAGSTER_UI_PORT": str(dagster_port), "TELEPROMPT_MLFLOW_UI_PORT": str(mlflow_port), TOKEN_VAR: token,
    }
    out, err = tmp_path / "make-ui.out", tmp_path / "make-ui.err"
    log = lambda: out.read_text(errors="replace")[-2000:] + "\n--- stderr ---\n" + err.read_text(errors="replace")
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        # a session of its own: make leads the process group a terminal's Ctrl-C would reach
        proc = subprocess.Popen([make, "ui"], cwd=REPO, env=env, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        exited = lambda: None if proc.poll() is None else f"exited with {proc.returncode}"
        dagster_url, mlflow_url = f"http://127.0.0.1:{dagster_port}", f"http://127.0.0.1:{mlflow_port}"
        wait_until(lambda: http_get(f"{mlflow_url}/health") is not None, exited, "mlflow ui", log, START_TIMEOUT_S)
        wait_until(lambda: dagster_location_loaded(dagster_url), exited, "dagster dev", log, START_TIMEOUT_S)
        assert b"<html" in (http_get(dagster_url) or b"").lower() and b"<html" in (http_get(mlflow_url) or b"").lower()
        started = processes_with(token)
        commands = "\n".join(started.values())
        for part in ("dagster dev", "dagster_webserver", "dagster._daemon", "mlflow ui", "uvicorn"):
            assert part in commands, f"no {part!r} among the processes `make ui` started:\n{commands}"

        sig = signal.SIGINT if how.startswith("SIGINT") else signal.SIGTERM
        sent = time.monotonic()
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=STOP_LIMIT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`make ui` still running {STOP_LIMIT_S} s after {how}; left: {processes_with(token)}\n{log()}")
        left = processes_with(token)
        while left and time.monotonic() - sent < STOP_LIMIT_S:
            time.sleep(0.05)
            left = processes_with(token)
        stopped_s = time.monotonic() - sent
        assert not left, f"orphans {STOP_LIMIT_S} s after {how}:\n" + "\n".join(f"{pid} {cmd}" for pid, cmd in left.items())
        print(f"make ui: {len(started)} processes, all gone {stopped_s:.1f} s after {how}; make exit {proc.returncode}")

        errors = err.read_text(errors="replace")
        assert "Traceback" not in errors, errors[-4000:]
        assert "did not stop within" not in errors, errors[-4000:]  # the launcher had to SIGKILL a leader
        assert f"teleprompt ui: stopped ({sig.name})" in errors
        assert proc.returncode in (-sig, 128 + sig), f"make exited {proc.returncode}, not by {sig.name}"  # make ends by the signal it got
        for url in (dagster_url, mlflow_url):
            assert http_get(url, timeout=2) is None, f"{url} still answers"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        kill_all(token)
