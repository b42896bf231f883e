"""Real servers for the scale-out and outage tests: a throwaway PostgreSQL cluster and an `mlflow server`
(also one that a test kills and restarts).

PostgreSQL comes from the Debian package (``scripts/postgres.sh install``; `.ci/run` pre-installs
it). When it cannot be installed or started the test is skipped with the reason, except when the
``CI`` environment variable is set: there it fails, as the JS interop tests do without node.
"""

from __future__ import annotations

import os
import pwd
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
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


def _wait_healthy(url: str, exited: Callable[[], str | None], log: Path, timeout_s: float, poll_s: float) -> None:
    """Until ``url/health`` answers; ``exited`` says why the server process is gone, if it is."""
    deadline = time.monotonic() + timeout_s
    while not _healthy(url):
        if (why := exited()) is not None:
            raise RuntimeError(f"mlflow server {why}:\n{log.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"mlflow server not healthy after {timeout_s} s:\n{log.read_text()[-4000:]}")
        time.sleep(poll_s)


def _server_env(**extra: str) -> dict[str, str]:
    """The test's environment for a server: not pointed at any tracking server itself, and without
    server-side jobs (huey consumers for scorers and judges), which teleprompt does not use; off,
    the server starts in half the time and leaves the two cores to the pipeline."""
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", **extra)
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        env.pop(var, None)
    return env


@contextmanager
def mlflow_server(backend_store_uri: str, workdir: Path, timeout_s: float = 180, artifacts_destination: str | None = None,
                  env: dict[str, str] | None = None) -> Iterator[MlflowServer]:
    """``mlflow server`` from this virtualenv on 127.0.0.1:<free port>, one worker, proxied artifacts
    under ``workdir/mlflow-artifacts`` or at ``artifacts_destination`` (e.g. ``s3://…``, with the
    bucket's AWS settings in ``env``). The store URI (it holds a password) is passed in the
    environment (``MLFLOW_BACKEND_STORE_URI``), not on the command line where ``ps`` would show it."""
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    artifacts = workdir / "mlflow-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    log = workdir / "mlflow-server.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = _server_env(MLFLOW_BACKEND_STORE_URI=backend_store_uri, **(env or {}))
    cmd = [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--serve-artifacts", "--artifacts-destination", artifacts_destination or artifacts.as_uri()]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True)
    try:
        _wait_healthy(url, lambda: None if proc.poll() is None else f"exited with {proc.returncode}", log, timeout_s, 0.5)
        yield MlflowServer(url, artifacts, log)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn worker: our own session
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


# A killable server. `mlflow server --workers 1` checks the store, then runs `python -m uvicorn ...
# mlflow.server.fastapi_app:app` with its settings in `_MLFLOW_SERVER_*` variables; that process is
# the server. It takes ~12 s to come up here, ~7 s of it importing the app: too much to pay at
# every restart. So a zygote imports the app once, under the variables the CLI would set, and forks
# a fresh server process per start, which runs uvicorn with the CLI's options (the store is checked,
# and created if new, by the server's first request). Killing one kills the real server; the store
# is left exactly as the kill left it.
_ZYGOTE = """
import ctypes, os, secrets, signal, sys
import mlflow.server.fastapi_app  # noqa: F401 - the slow import, paid once
import uvicorn.main
from mlflow import environment_variables as variables, server
from mlflow.server import constants

assert {constants.BACKEND_STORE_URI_ENV_VAR, constants.ARTIFACT_ROOT_ENV_VAR, constants.SERVE_ARTIFACTS_ENV_VAR,
        constants.ARTIFACTS_DESTINATION_ENV_VAR, variables._MLFLOW_IN_JOB_EXECUTOR.name, variables._MLFLOW_SGI_NAME.name} <= set(os.environ)
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the servers
print("ready", flush=True)
for line in sys.stdin:
    port = int(line)
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()  # its own process group: a kill reaches the server and nothing else
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: gone with the zygote, which ends with the test's stdin
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            os.dup2(2, 1)
            os.environ[variables._MLFLOW_SERVER_BOOT_ID.name] = secrets.token_hex(16)
            uvicorn.main.main(args=["--log-config", str(server._UVICORN_LOG_CONFIG), "--host", "127.0.0.1", "--port", str(port),
                                    "--workers", "1", "mlflow.server.fastapi_app:app"], prog_name="uvicorn")
        finally:
            os._exit(1)
    print(pid, flush=True)
"""


class KillableMlflowServer:
    """An MLflow tracking server on one port and one backend store that a test kills and restarts.

    ``start()`` (well under a second once the zygote has imported), ``kill()`` (SIGKILL by default,
    the server's whole process group), ``start()`` again: same port, same store.
    """

    def __init__(self, zygote: subprocess.Popen, workdir: Path, timeout_s: float) -> None:
        self._zygote = zygote
        self._ready = False
        self.log = workdir / "mlflow-server.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.timeout_s = timeout_s
        self.pid: int | None = None

    def _line(self, timeout_s: float) -> str:
        ready, _, _ = select.select([self._zygote.stdout], [], [], timeout_s)
        line = self._zygote.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"the mlflow server zygote gave no answer within {timeout_s} s (exit code {self._zygote.poll()}):\n"
                               f"{self.log.read_text()[-4000:]}")
        return line.strip()

    @property
    def running(self) -> bool:
        """The server process exists and is not a zombie (one whose zygote died is nobody's to reap)."""
        if self.pid is None:
            return False
        try:
            with open(f"/proc/{self.pid}/stat") as stat:
                return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except FileNotFoundError:
            return False

    def start(self) -> float:
        """Start a server process and wait until it is healthy; returns the seconds it took."""
        assert not self.running, f"mlflow server {self.pid} is still running"
        started = time.perf_counter()
        if not self._ready:
            assert self._line(self.timeout_s) == "ready"
            self._ready = True
        self._zygote.stdin.write(f"{self.port}\n")
        self._zygote.stdin.flush()
        self.pid = int(self._line(30))
        _wait_healthy(self.url, lambda: None if self.running else "exited", self.log, self.timeout_s, 0.05)
        return time.perf_counter() - started

    def kill(self, sig: int = signal.SIGKILL, timeout_s: float = 20) -> None:
        """Signal the server's process group; return once it is gone (its port refuses connections)."""
        if self.pid is None:
            return
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout_s
        while self.running:
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server {self.pid} survived signal {sig} for {timeout_s} s")
            time.sleep(0.01)
        self.pid = None


@contextmanager
def killable_mlflow_server(backend_store_uri: str, workdir: Path, timeout_s: float = 120) -> Iterator[KillableMlflowServer]:
    """A :class:`KillableMlflowServer` for ``backend_store_uri``, not started yet: its zygote starts
    importing at once, so the caller can prepare the store meanwhile. Proxied artifacts under
    ``workdir/mlflow-artifacts`` as with :func:`mlflow_server`; the store URI travels in the
    environment. Whatever server is left running is killed on exit."""
    artifacts = workdir / "mlflow-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    env = _server_env(PYTHONWARNINGS="ignore", _MLFLOW_SERVER_FILE_STORE=backend_store_uri, _MLFLOW_SERVER_ARTIFACT_ROOT="mlflow-artifacts:/",
                      _MLFLOW_SERVER_SERVE_ARTIFACTS="true", _MLFLOW_SERVER_ARTIFACT_DESTINATION=artifacts.as_uri(),
                      _MLFLOW_IN_JOB_EXECUTOR="false", _MLFLOW_SGI_NAME="uvicorn")
    with open(workdir / "mlflow-server.log", "ab") as log:
        zygote = subprocess.Popen([sys.executable, "-c", _ZYGOTE], env=env, cwd=workdir, text=True, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=log, start_new_session=True)
    server = KillableMlflowServer(zygote, workdir, timeout_s)
    try:
        yield server
    finally:
        server.kill()
        zygote.kill()  # it holds nothing but imports
        zygote.wait(timeout=10)
        zygote.stdin.close()
        zygote.stdout.close()


@dataclass(frozen=True)
class S3Server:
    """An S3-compatible server (moto's, from PyPI) and the AWS settings a client of it needs."""

    endpoint: str
    log: Path

    def env(self) -> dict[str, str]:
        """What boto3 (and MLflow's S3 artifact repository) read: the endpoint, dummy credentials, a region."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "MLFLOW_S3_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "teleprompt-test",
                "AWS_SECRET_ACCESS_KEY": "teleprompt-test-secret", "AWS_DEFAULT_REGION": "us-east-1"}

    def client(self):
        import boto3

        env = self.env()
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name=env["AWS_DEFAULT_REGION"])

    def bytes_under(self, bucket: str, prefix: str) -> tuple[int, int]:
        """(objects, bytes) stored under ``prefix``."""
        count = size = 0
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                count, size = count + 1, size + item["Size"]
        return count, size


@contextmanager
def s3_server(workdir: Path, buckets: tuple[str, ...] = ("teleprompt",), timeout_s: float = 60) -> Iterator[S3Server]:
    """``moto_server`` from this virtualenv on 127.0.0.1:<free port>, in its own process, with
    ``buckets`` created; stopped afterwards (its state lives in memory only)."""
    moto = Path(sys.executable).with_name("moto_server")
    if not moto.exists():
        unavailable(f"{moto} is missing: `make install` installs the dev dependencies (moto)")
    port = free_port()
    log = workdir / "s3-server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                urllib.request.urlopen(server.endpoint, timeout=2).close()
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start:\n{log.read_text()[-2000:]}") from None
                time.sleep(0.1)
        for bucket in buckets:
            server.client().create_bucket(Bucket=bucket)
        yield server
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@contextmanager
def redis_server(workdir: Path, timeout_s: float = 30) -> Iterator[str]:
    """Debian's ``redis-server`` (``scripts/redis.sh install``) on 127.0.0.1:<free port>, in memory
    only; yields its ``redis://`` URL. Skipped without it locally, failed on CI."""
    found = subprocess.run(["bash", str(REPO / "scripts" / "redis.sh"), "path"], capture_output=True, text=True, check=False)
    if found.returncode != 0:
        installed = subprocess.run(["bash", str(REPO / "scripts" / "redis.sh"), "install"], capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False)
        if installed.returncode != 0:
            unavailable(f"redis-server is not installed and `scripts/redis.sh install` failed: {installed.stderr.strip()[-500:]}")
        found = subprocess.run(["bash", str(REPO / "scripts" / "redis.sh"), "path"], capture_output=True, text=True, check=False)
    port = free_port()
    log = workdir / "redis.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([found.stdout.strip(), "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "no", "--save", "", "--appendonly", "no"],
                                stdout=out, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def graphql(base_url: str, query: str, **variables) -> dict:
    """One query to a Dagster webserver's GraphQL API (what its UI sends); fails the test on an error."""
    import json

    request = urllib.request.Request(f"{base_url}/graphql", data=json.dumps({"query": query, "variables": variables}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as error:
        pytest.fail(f"graphql {query[:60]!r}: HTTP {error.code}: {error.read()[:2000]!r}")
    assert "errors" not in body, body
    return body["data"]


def start_group(cmd: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    """A server in a process group of its own, its output appended to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, then SIGKILL to whatever the leader left behind."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)
