"""``make ui``: the Dagster UI and the MLflow UI over the same local state, started and stopped together.

Each UI runs as its own process group (its own session): ``dagster dev`` with its webserver, daemon
and code server, and ``mlflow ui`` with its uvicorn server. A terminal's Ctrl-C (SIGINT to the
foreground process group: make and this launcher), SIGTERM (make forwards it to this launcher) or
SIGHUP reaches this launcher only, which then stops both in order: SIGINT to ``dagster dev`` (it
shuts its webserver and daemon down, and they their code servers), SIGTERM to MLflow's group, then,
once each leader has exited or ``TELEPROMPT_UI_STOP_TIMEOUT_S`` (10 s) has passed, SIGKILL to
whatever is left in either group. Then it ends by the signal it received, as an interrupted program
does. If one UI dies on its own, the other is stopped and the launcher exits with status 1.

Ports come from ``TELEPROMPT_DAGSTER_UI_PORT`` (3000) and ``TELEPROMPT_MLFLOW_UI_PORT`` (5000);
``TELEPROMPT_DAGSTER_UI_URL`` and ``TELEPROMPT_MLFLOW_UI_URL`` (the addresses links between the two
UIs use) default to those ports for everything started here. Only the standard library and the
settings module are imported: the UIs' own processes import Dagster and MLflow.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from teleprompt_assets.core.settings import load_settings

HOST = "127.0.0.1"
DAGSTER_PORT_VAR = "TELEPROMPT_DAGSTER_UI_PORT"
MLFLOW_PORT_VAR = "TELEPROMPT_MLFLOW_UI_PORT"
STOP_TIMEOUT_VAR = "TELEPROMPT_UI_STOP_TIMEOUT_S"
DEFAULT_DAGSTER_PORT = 3000
DEFAULT_MLFLOW_PORT = 5000
DEFAULT_STOP_TIMEOUT_S = 10.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
POLL_S = 0.2
_PR_SET_PDEATHSIG = 1


def _port(var: str, default: int) -> int:
    raw = os.environ.get(var) or str(default)
    try:
        port = int(raw)
    except ValueError:
        raise SystemExit(f"teleprompt ui: {var}={raw!r} is not a port number") from None
    if not 0 < port < 65536:
        raise SystemExit(f"teleprompt ui: {var}={port} is not a port number (1-65535)")
    return port


def _own_group() -> None:
    """In the child before exec: a session of its own (a terminal's Ctrl-C goes to the launcher,
    which stops the UIs in order), and SIGTERM should the launcher itself be killed outright."""
    os.setsid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the launcher's own handlers still stop both
        pass


class Service:
    def __init__(self, name: str, cmd: list[str], env: dict[str, str], stop_signal: int, whole_group: bool) -> None:
        self.name = name
        self.stop_signal = stop_signal
        self.whole_group = whole_group  # signal the group (mlflow's CLI and its server) or only the leader (dagster dev shuts down its own)
        self.proc = subprocess.Popen(cmd, env=env, preexec_fn=_own_group)  # preexec_fn: the launcher runs no threads
        self.pgid = self.proc.pid

    def signal(self, sig: int) -> None:
        try:
            if self.whole_group or sig == signal.SIGKILL:
                os.killpg(self.pgid, sig)
            elif self.proc.poll() is None:
                self.proc.send_signal(sig)
        except ProcessLookupError:
            pass

    def group_alive(self) -> bool:
        """Whether any live process is left in the group (the leader's exit does not end its children).
        Zombies do not count: orphans killed here wait for init to reap them, which may take a while."""
        proc = Path("/proc")
        if not proc.is_dir():
            try:
                os.killpg(self.pgid, 0)
            except ProcessLookupError:
                return False
            return True
        for entry in proc.iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except (OSError, IndexError):
                    continue
                if int(fields[2]) == self.pgid and fields[0] not in ("Z", "X"):  # state, ppid, pgrp
                    return True
        return False


def _commands(bin_dir: Path, workspace: str, dagster_port: int, mlflow_port: int, tracking_uri: str) -> list[tuple[str, list[str], int, bool]]:
    services = [("dagster", [str(bin_dir / "dagster"), "dev", "-w", workspace, "-h", HOST, "-p", str(dagster_port)], signal.SIGINT, False)]
    if tracking_uri.startswith(("http://", "https://")):
        print(f"teleprompt ui: MLFLOW_TRACKING_URI is a tracking server ({tracking_uri}): its own UI serves the runs, none is started here", flush=True)
    else:
        services.append(("mlflow", [str(bin_dir / "mlflow"), "ui", "--backend-store-uri", tracking_uri, "--host", HOST, "--port", str(mlflow_port),
                                    "--workers", "1"], signal.SIGTERM, True))
    return services


def _stop(services: list[Service], timeout_s: float) -> None:
    for service in services:
        service.signal(service.stop_signal)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(s.proc.poll() is None for s in services):
        time.sleep(0.05)
    for service in services:  # anything a leader left behind, or a leader past the deadline
        if service.proc.poll() is None:
            print(f"teleprompt ui: {service.name} did not stop within {timeout_s:g} s, killing it", file=sys.stderr, flush=True)
        if service.group_alive():
            service.signal(signal.SIGKILL)
        try:
            service.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    late = time.monotonic() + 5
    while time.monotonic() < late and any(s.group_alive() for s in services):  # killed members exit as soon as they are scheduled
        time.sleep(0.02)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m teleprompt_assets.ui", description=__doc__.split("\n\n")[0])
    parser.add_argument("-w", "--workspace", default="workspace.yaml", help="the Dagster workspace file (default: workspace.yaml)")
    args = parser.parse_args(argv)

    received: list[int] = []

    def on_signal(signum: int, _frame) -> None:
        received.append(signum)

    for sig in STOP_SIGNALS:  # also replaces an inherited SIG_IGN, which the UIs would otherwise inherit in turn (docs/architecture.md#runs)
        signal.signal(sig, on_signal)

    dagster_port = _port(DAGSTER_PORT_VAR, DEFAULT_DAGSTER_PORT)
    mlflow_port = _port(MLFLOW_PORT_VAR, DEFAULT_MLFLOW_PORT)
    timeout_s = float(os.environ.get(STOP_TIMEOUT_VAR) or DEFAULT_STOP_TIMEOUT_S)
    settings = load_settings()
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("DAGSTER_HOME", str(settings.dagster_home))
    env.setdefault("TELEPROMPT_DAGSTER_UI_URL", f"http://{HOST}:{dagster_port}")
    env.setdefault("TELEPROMPT_MLFLOW_UI_URL", f"http://{HOST}:{mlflow_port}")
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")  # server-side scorer jobs, which teleprompt does not use: fewer processes

    services: list[Service] = []
    status = 0
    try:
        for name, cmd, stop_signal, whole_group in _commands(Path(sys.executable).parent, args.workspace, dagster_port, mlflow_port, settings.tracking_uri):
            if received:
                break
            services.append(Service(name, cmd, env, stop_signal, whole_group))
        if not received:
            urls = [f"Dagster UI http://{HOST}:{dagster_port}"] + [f"MLflow UI http://{HOST}:{mlflow_port}" for s in services if s.name == "mlflow"]
            print(f"teleprompt ui: {', '.join(urls)} (state in {settings.home}); Ctrl-C stops both", flush=True)
        while not received:
            dead = next((s for s in services if s.proc.poll() is not None), None)
            if dead is not None:
                print(f"teleprompt ui: {dead.name} exited with status {dead.proc.returncode}; stopping the rest", file=sys.stderr, flush=True)
                status = 1
                break
            time.sleep(POLL_S)
    finally:  # a second Ctrl-C meanwhile only lands in ``received``: it cannot interrupt the sweep
        _stop(services, timeout_s)
    if received and status == 0:
        print(f"teleprompt ui: stopped ({signal.Signals(received[0]).name})", file=sys.stderr, flush=True)
        signal.signal(received[0], signal.SIG_DFL)
        os.kill(os.getpid(), received[0])  # end as the signal would have ended us: the shell and make see an interrupt
    return status


if __name__ == "__main__":
    sys.exit(main())
