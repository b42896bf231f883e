"""The registration lock across processes, on one host (a file) and across hosts (PostgreSQL advisory locks).

A holder in another process keeps the lock; this process times out with RegistryBusy naming it;
when the holder is killed with SIGKILL the lock is free at once (no stale lock after a crash).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from teleprompt_assets.register.locks import LOCK_URL_ENV, RegistryBusy, registration_lock
from teleprompt_assets_tests.servers import postgres

pytestmark = pytest.mark.e2e  # a PostgreSQL server and holder processes: `make test-e2e`

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from teleprompt_assets.register.locks import registration_lock
    with registration_lock(Path(sys.argv[1]), "teleprompt-m", sys.argv[2], timeout_s=10):
        print("held", flush=True)
        time.sleep(120)
""")


@pytest.fixture(scope="module")
def lock_url():
    with postgres() as pg:
        yield pg.url("dagster")


@pytest.fixture(params=["file", "postgres"])
def backend(request, monkeypatch, tmp_path):
    if request.param == "postgres":
        monkeypatch.setenv(LOCK_URL_ENV, request.getfixturevalue("lock_url"))
    else:
        monkeypatch.delenv(LOCK_URL_ENV, raising=False)
    return tmp_path / "locks", request.param


def _holder(lock_dir: Path, window: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_dir), window], stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_lock_times_out_and_a_killed_holder_frees_it(backend):
    lock_dir, kind = backend
    holder = _holder(lock_dir, "2026-01-01..2026-01-07")
    try:
        where = "PostgreSQL advisory lock" if kind == "postgres" else str(lock_dir)
        with pytest.raises(RegistryBusy, match=f"another run is registering it \\(lock {where}"):
            with registration_lock(lock_dir, "teleprompt-m", "2026-01-01..2026-01-07", timeout_s=0.3):
                pass
        with registration_lock(lock_dir, "teleprompt-m", "champion", timeout_s=0.3):  # another key is free
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    with registration_lock(lock_dir, "teleprompt-m", "2026-01-01..2026-01-07", timeout_s=5):
        pass
