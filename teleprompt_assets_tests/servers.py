"""Real servers for the scale-out test: a throwaway PostgreSQL cluster and an `mlflow server`.

PostgreSQL comes from the Debian package (``scripts/postgres.sh install``; `.ci/run` pre-installs
it). When it cannot be installed or started the test is skipped with the reason, except when the
``CI`` environment variable is set: there it fails, as the JS interop tests do without node.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "postgres.sh"
INIT_SQL = REPO / "deploy" / "postgres-init.sql"
INSTALL_TIMEOUT_S = 600
START_TIMEOUT_S = 120


def unavailable(reason: str) -> None:
    """Skip locally; fail on CI, where the server is part of what is tested."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is an error, not a skip)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _script(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False)


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    bindir: Path
    superuser_password: str
    passwords: dict[str, str]  # role -> password; each role owns the database of the same name

    def url(self, role: str, database: str | None = None, scheme: str = "postgresql+psycopg2") -> str:
        return f"{scheme}://{role}:{self.passwords[role]}@{self.host}:{self.port}/{database or role}"

    def connect(self, role: str, database: str | None = None):
        import psycopg2

        return psycopg2.connect(host=self.host, port=self.port, user=role, password=self.passwords[role], dbname=database or role)

    def env(self, role: str = "postgres") -> dict[str, str]:
        """libpq's environment for the client tools (psql, pg_dump, pg_restore) as ``role``."""
        password = self.superuser_password if role == "postgres" else self.passwords[role]
        return dict(os.environ, PGHOST=self.host, PGPORT=str(self.port), PGUSER=role, PGPASSWORD=password,
                    PGDATABASE="postgres" if role == "postgres" else role)

    def tool(self, name: str, *args: str, role: str = "postgres", timeout: float = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(self.bindir / name), *args], env=self.env(role), capture_output=True, text=True, timeout=timeout, check=False)
        assert proc.returncode == 0, f"{name} {' '.join(args)} (as {role}) exited {proc.returncode}: {proc.stderr[-2000:]}"
        return proc


def _hand_to_postgres_user(path: Path) -> None:
    """As root, initdb and the server run as the `postgres` OS user, which must own their files."""
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)


@contextmanager
def postgres(roles: tuple[str, ...] = ("mlflow", "dagster")) -> Iterator[Postgres]:
    """Install if needed, initdb a cluster in a temp dir, start it on 127.0.0.1:<free port>, create
    the databases with ``deploy/postgres-init.sql``; stop it and delete everything afterwards."""
    if not shutil.which("bash"):
        unavailable("bash is needed to run scripts/postgres.sh")
    found = _script("bindir", timeout=30)
    if found.returncode != 0:
        installed = _script("install", timeout=INSTALL_TIMEOUT_S)
        if installed.returncode != 0:
            unavailable(f"PostgreSQL is not installed and `scripts/postgres.sh install` failed: {installed.stderr.strip()[-500:]}")
        found = _script("bindir", timeout=30)
    bindir = Path(found.stdout.strip())
    root = Path(tempfile.mkdtemp(prefix="teleprompt-pg-"))
    data = root / "data"
    started = False
    try:
        _hand_to_postgres_user(root)
        superuser_password = secrets.token_urlsafe(18)
        pwfile = root / "pwfile"
        pwfile.write_text(superuser_password + "\n")
        pwfile.chmod(0o600)
        _hand_to_postgres_user(pwfile)
        port = free_port()
        proc = _script("start", str(data), str(port), str(pwfile), timeout=START_TIMEOUT_S)
        pwfile.unlink()
        if proc.returncode != 0:
            unavailable(f"PostgreSQL did not start (`scripts/postgres.sh start`, exit {proc.returncode}): {proc.stderr.strip()[-1500:]}")
        started = True
        server = Postgres("127.0.0.1", port, bindir, superuser_password, {role: secrets.token_urlsafe(18) for role in roles})
        variables = [a for role in roles for a in ("-v", f"{role}_password={server.passwords[role]}")]
        server.tool("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", *variables, "-f", str(INIT_SQL))
        yield server
    finally:
        if started:
            _script("stop", str(data), "immediate", timeout=90)  # the cluster is deleted next: no checkpoint
        shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class MlflowServer:
    url: str
    artifacts: Path
    log: Path


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


@contextmanager
def mlflow_server(backend_store_uri: str, workdir: Path, timeout_s: float = 180) -> Iterator[MlflowServer]:
    """``mlflow server`` from this virtualenv on 127.0.0.1:<free port>, one worker, proxied artifacts
    under ``workdir/artifacts``. The store URI (it holds a password) is passed in the environment
    (``MLFLOW_BACKEND_STORE_URI``), not on the command line where ``ps`` would show it."""
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    artifacts = workdir / "mlflow-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    log = workdir / "mlflow-server.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # Server-side jobs (huey consumers for scorers and judges) are not used by teleprompt; off, the
    # server starts in half the time and leaves the two cores to the pipeline.
    env = dict(os.environ, MLFLOW_BACKEND_STORE_URI=backend_store_uri, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        env.pop(var, None)
    cmd = [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--serve-artifacts", "--artifacts-destination", artifacts.as_uri()]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while not _healthy(url):
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server not healthy after {timeout_s} s:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)
        yield MlflowServer(url, artifacts, log)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn worker: our own session
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
