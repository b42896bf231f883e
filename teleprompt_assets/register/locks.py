"""The locks that serialize writes to one registered model: registering a window, moving ``champion``.

On one host a file lock is enough. With runs on several hosts (K8s, Celery workers, a rollback typed
on another machine) the lock must live where every host sees it: ``TELEPROMPT_LOCK_URL`` names a
PostgreSQL database, and the lock becomes a session-level advisory lock there. Both kinds are
released by the holder's death (the kernel closes the file, PostgreSQL ends the session), so a
crashed run never leaves one stuck.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_TIMEOUT_ENV = "TELEPROMPT_REGISTRY_LOCK_TIMEOUT_S"
LOCK_URL_ENV = "TELEPROMPT_LOCK_URL"
DEFAULT_LOCK_TIMEOUT_S = 600.0
POLL_S = 0.05


class RegistryBusy(TimeoutError):
    """Another run kept the registration lock of this program and window past the timeout; nothing was written."""


def _key(name: str, window: str) -> bytes:
    return hashlib.sha256(f"{name}\x1f{window}".encode()).digest()


@contextmanager
def registration_lock(lock_dir: Path, name: str, window: str, timeout_s: float | None = None) -> Iterator[None]:
    """Hold the lock of (registered model, window): one registering writer at a time.

    Per host (a file under ``lock_dir``), or across hosts when ``TELEPROMPT_LOCK_URL`` is set. Waits
    up to ``timeout_s`` (``TELEPROMPT_REGISTRY_LOCK_TIMEOUT_S``, default 600), then raises
    :class:`RegistryBusy`.
    """
    timeout = float(os.environ.get(LOCK_TIMEOUT_ENV, DEFAULT_LOCK_TIMEOUT_S)) if timeout_s is None else timeout_s
    url = os.environ.get(LOCK_URL_ENV)
    held = _postgres_lock(url, name, window, timeout) if url else _file_lock(lock_dir, name, window, timeout)
    with held:
        yield


def _busy(name: str, window: str, where: str, timeout: float) -> RegistryBusy:
    return RegistryBusy(f"{name} window {window}: another run is registering it (lock {where} held for over {timeout:g} s); nothing written")


@contextmanager
def _file_lock(lock_dir: Path, name: str, window: str, timeout: float) -> Iterator[None]:
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / f"{name}.{hashlib.sha256(window.encode('utf-8')).hexdigest()[:16]}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _busy(name, window, str(path), timeout) from None
                time.sleep(POLL_S)
        yield
    finally:
        os.close(fd)


@contextmanager
def _postgres_lock(url: str, name: str, window: str, timeout: float) -> Iterator[None]:
    """``pg_try_advisory_lock`` on a connection of its own, kept open while the lock is held."""
    import psycopg2

    key = int.from_bytes(_key(name, window)[:8], "big", signed=True)
    connection = psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://", 1))
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            deadline = time.monotonic() + timeout
            while True:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", (key,))
                if cursor.fetchone()[0]:
                    break
                if time.monotonic() >= deadline:
                    raise _busy(name, window, f"PostgreSQL advisory lock {key}", timeout)
                time.sleep(POLL_S)
            try:
                yield
            finally:
                cursor.execute("SELECT pg_advisory_unlock(%s)", (key,))
    finally:
        connection.close()
