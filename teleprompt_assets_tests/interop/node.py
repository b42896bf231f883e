"""Run the real JS tools (EAS SDK, @openzeppelin/merkle-tree) against bundles from the test suite.

``package.json``/``package-lock.json`` in this folder pin the exact JS versions; ``npm ci`` installs
them into ``node_modules`` (git-ignored) the first time a test needs them, once per checkout.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

INTEROP = Path(__file__).resolve().parent
LOCKFILE = INTEROP / "package-lock.json"
NODE_MODULES = INTEROP / "node_modules"
SCRIPT = INTEROP / "verify_bundle.js"
# Written after a successful `npm ci`; holds the sha256 of the package-lock.json it installed.
STAMP = NODE_MODULES / ".teleprompt-npm-ci"
NPM_CI = ("ci", "--no-audit", "--no-fund", "--ignore-scripts")
NPM_TIMEOUT_S = 600
NODE_TIMEOUT_S = 120


def _tool(name: str) -> str:
    """The executable's path; skip locally when it is missing, but fail on CI (CI machines have node)."""
    path = shutil.which(name)
    if path is None:
        reason = f"`{name}` is not on PATH: the JS interop tests need Node.js >= 18 with npm"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set, so this is an error, not a skip)", pytrace=False)
        pytest.skip(reason)
    return path


def _lock_digest() -> str:
    return hashlib.sha256(LOCKFILE.read_bytes()).hexdigest()


def _installed() -> bool:
    """node_modules is current when it holds a stamp for exactly this package-lock.json."""
    try:
        return STAMP.read_text().strip() == _lock_digest()
    except FileNotFoundError:
        return False


@functools.cache
def ensure_node_modules() -> Path:
    """`npm ci` here when node_modules is missing or was installed from another package-lock.json.

    An flock serializes parallel pytest workers (xdist) on one machine; the lock file lives in the
    temp dir, not in node_modules, which `npm ci` deletes.
    """
    _tool("node")
    npm = _tool("npm")
    if _installed():
        return NODE_MODULES
    key = hashlib.sha256(str(INTEROP).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"teleprompt-interop-{key}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not _installed():  # another worker may have installed while we waited
                proc = subprocess.run(
                    [npm, *NPM_CI], cwd=INTEROP, capture_output=True, text=True, timeout=NPM_TIMEOUT_S, check=False
                )
                if proc.returncode != 0:
                    raise RuntimeError(
                        f"`npm {' '.join(NPM_CI)}` failed in {INTEROP} (exit {proc.returncode}):\n"
                        f"{proc.stderr[-4000:]}{proc.stdout[-2000:]}"
                    )
                STAMP.write_text(_lock_digest() + "\n")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return NODE_MODULES


def verify_with_js(bundle: Path, signer: str | None) -> dict:
    """Run verify_bundle.js on a bundle folder: {"ok", "uid", "signer", "checks", "errors"}."""
    ensure_node_modules()
    node = _tool("node")
    args = [node, str(SCRIPT), str(bundle)] + ([signer] if signer else [])
    proc = subprocess.run(args, cwd=INTEROP, capture_output=True, text=True, timeout=NODE_TIMEOUT_S, check=False)
    try:
        result = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"verify_bundle.js printed no JSON (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}") from None
    if proc.returncode not in (0, 1) or (proc.returncode == 0) != result.get("ok"):
        raise RuntimeError(f"verify_bundle.js exit {proc.returncode} disagrees with its report {result}:\n{proc.stderr}")
    return result
