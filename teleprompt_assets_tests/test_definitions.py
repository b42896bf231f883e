"""Outside tools are the judge: `dagster definitions validate` and `dg check defs` accept the project."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from teleprompt_assets.core.addresses import AddressError
from teleprompt_assets.definitions import build_definitions

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(args, tp_home):
    env = dict(os.environ, DAGSTER_HOME=str(tp_home / "dagster"), VIRTUAL_ENV=str(BIN.parent))
    (tp_home / "dagster").mkdir(parents=True, exist_ok=True)
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_dagster_definitions_validate(tp_home):
    result = _run([str(BIN / "dagster"), "definitions", "validate", "-w", "workspace.yaml"], tp_home)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Validation successful" in result.stdout + result.stderr


def test_dg_check_defs(tp_home):
    result = _run([str(BIN / "dg"), "check", "defs"], tp_home)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "All definitions loaded successfully" in result.stdout + result.stderr


def test_a_bad_eas_contract_fails_the_definitions_not_the_last_step(tp_home, monkeypatch):
    """Checked at load time: otherwise a run registers a version and only its attestation step fails."""
    monkeypatch.setenv("TELEPROMPT_EAS_CONTRACT", "0xc2679fbd37d54388ce493f1db75320d236e1815e")  # Sepolia's EAS, lowercased
    with pytest.raises(AddressError, match="TELEPROMPT_EAS_CONTRACT"):
        build_definitions()
