"""Bundles from attest.build_bundle, verified by the real JS tools (EAS SDK + @openzeppelin/merkle-tree).

teleprompt_assets_tests/interop/verify_bundle.js runs under node with the exact package versions in
interop/package-lock.json (installed by `npm ci` on first use). Python's verify_bundle must agree with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from teleprompt_assets.attest import eas
from teleprompt_assets.attest.bundles import PACKAGE_FILE, attestation_uid, build_bundle, bundle_attester, verify_bundle, write_bundle
from teleprompt_assets.attest.merkle import StandardMerkleTree
from teleprompt_assets_tests.attest.test_bundles import EVIDENCE, KEY, SIGNER
from teleprompt_assets_tests.conftest import REPO
from teleprompt_assets_tests.interop.node import NODE_MODULES, NODE_TIMEOUT_S, _tool, ensure_node_modules, verify_with_js

pytestmark = pytest.mark.e2e  # starts servers or separate processes: `make test-e2e`

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
TREES = ("eval_tree", "data_tree", "rewards_tree")
ALL_CHECKS = {
    "attestation.read", "schema.read", "attestation.version", "attestation.signature", "attestation.signer",
    "attestation.uid", "attestation.schema_uid", "data.decodes", "data.evalCount", "data.contributorCount",
    "rewards.sum", "manifest.read", "manifest.entries", "manifest.sha256", "package.read", "package.sig", "package.signer",
    *(f"{tree}.{part}" for tree in TREES for part in ("load", "leafEncoding", "root", "proofs")),
}


@pytest.fixture(scope="module")
def node_modules() -> Path:
    return ensure_node_modules()


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return build_bundle(EVIDENCE, KEY)


@pytest.fixture
def bundle(files, tmp_path, node_modules) -> Path:
    return write_bundle(files, tmp_path / "bundle")


def _edit_json(bundle: Path, name: str, edit: Callable[[Any], None]) -> None:
    """Tamper with one file, then re-hash the manifest so only the substantive check can catch it."""
    path = bundle / name
    obj = json.loads(path.read_text())
    edit(obj)
    path.write_text(json.dumps(obj, indent=2))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


def test_bundle_verifies_in_js(bundle, files):
    assert verify_bundle(bundle, SIGNER) == []
    js = verify_with_js(bundle, SIGNER)
    assert js["errors"] == []
    assert js["checks"] == dict.fromkeys(ALL_CHECKS, True)
    assert js["ok"] is True
    assert js["signer"] == SIGNER
    assert js["uid"] == attestation_uid(files)


def test_js_recovers_the_signer_without_being_told(bundle):
    js = verify_with_js(bundle, None)
    assert js["ok"] and js["signer"] == SIGNER and "attestation.signer" not in js["checks"]


def _time(att: dict) -> None:
    att["message"]["time"] = str(int(att["message"]["time"]) + 1)


def _time_and_uid(att: dict) -> None:
    """A tamperer who also recomputes the uid: only the signature can catch it."""
    _time(att)
    m = att["message"]
    att["uid"] = eas.offchain_uid(
        schema=m["schema"], recipient=m["recipient"], time=int(m["time"]), expiration_time=int(m["expirationTime"]),
        revocable=m["revocable"], ref_uid=m["refUID"], data=m["data"], salt=m["salt"],
    )


def _s_plus_one(att: dict) -> None:
    att["signature"]["s"] = f"0x{int(att['signature']['s'], 16) + 1:064x}"


def _s_malleated(att: dict) -> None:
    """(r, n - s, v ^ 1) recovers the same key; EIP-2 / the SDK (via ethers) refuse high-s signatures."""
    att["signature"]["s"] = f"0x{SECP256K1_N - int(att['signature']['s'], 16):064x}"
    att["signature"]["v"] = 27 if att["signature"]["v"] == 28 else 28


def _reward_amount(dump: dict) -> None:
    dump["values"][0]["value"][1] = str(int(dump["values"][0]["value"][1]) + 1)


def _rewards_rebuilt(dump: dict) -> None:
    """A self-consistent tree with moved weights (sum still 1e6): it loads, but its root is not the attested one."""
    values = [list(v["value"]) for v in dump["values"]]
    values[0][1], values[1][1] = str(int(values[0][1]) - 1), str(int(values[1][1]) + 1)
    rebuilt = StandardMerkleTree.of(values, dump["leafEncoding"]).dump()
    dump.clear()
    dump.update(rebuilt)


TAMPERS = {
    # case: (file, edit, checks JS must fail, a substring Python's problems must contain)
    # an attestation.json edited alone no longer matches the package's sig, hence package.sig
    "message.time": ("attestation.json", _time, {"attestation.signature", "attestation.signer", "attestation.uid", "package.sig"}, "uid is"),
    "message.time+uid": ("attestation.json", _time_and_uid, {"attestation.signature", "attestation.signer", "package.sig"}, "recovers to"),
    "signature.s+1": ("attestation.json", _s_plus_one, {"attestation.signature", "attestation.signer", "package.sig"}, "recovers to"),
    "signature.s-malleated": ("attestation.json", _s_malleated, {"attestation.signature", "attestation.signer", "package.sig"}, "attestation:"),
    "package.signer": (PACKAGE_FILE, lambda p: p.__setitem__("signer", "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1"), {"package.signer"}, "recovers to"),
    "package.sig.time": (PACKAGE_FILE, lambda p: _time(p["sig"]), {"package.sig", "package.signer"}, PACKAGE_FILE),
    "rewards.amount": (
        "rewards_tree.json", _reward_amount,
        {"rewards_tree.load", "rewards_tree.root", "rewards_tree.proofs", "rewards.sum"}, "rewards_tree.json: invalid tree",
    ),
    "rewards.rebuilt": ("rewards_tree.json", _rewards_rebuilt, {"rewards_tree.root", "rewards_tree.proofs"}, "rewardsRoot"),
}


@pytest.mark.parametrize("case", list(TAMPERS))
def test_tampered_bundle_is_rejected_by_js_and_python(bundle, case):
    name, edit, failing, py_hint = TAMPERS[case]
    _edit_json(bundle, name, edit)
    js = verify_with_js(bundle, SIGNER)
    problems = verify_bundle(bundle, SIGNER)
    assert js["ok"] is False
    assert set(js["checks"]) == ALL_CHECKS
    assert {check for check, passed in js["checks"].items() if not passed} == failing, js["errors"]
    assert js["errors"]
    # Python agrees: rejected, for the same reason (the manifest was re-hashed, so it is not that).
    assert problems, f"JS rejects {case} but Python accepts it"
    assert not any(p.startswith("manifest:") for p in problems)
    assert any(py_hint in p for p in problems), problems


def test_wrong_signer_is_rejected_by_js_and_python(bundle):
    other = "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1"
    js = verify_with_js(bundle, other)
    assert js["ok"] is False and js["signer"] == SIGNER
    assert {check for check, passed in js["checks"].items() if not passed} == {"attestation.signature", "attestation.signer", "package.signer"}
    assert any("recovers to" in p for p in verify_bundle(bundle, other))


# --- hostile bundles: the JS verifier reads only the bundle's own files too -------------------------


def test_js_refuses_a_manifest_entry_outside_the_bundle(bundle, tmp_path):
    entry = "../../../../etc/hostname"
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest[entry] = hashlib.sha256(b"victim\n").hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))
    js = verify_with_js(bundle, SIGNER)
    assert {check for check, passed in js["checks"].items() if not passed} == {"manifest.entries"}, js["errors"]
    assert any(entry in e for e in js["errors"]), js["errors"]
    assert any(entry in p for p in verify_bundle(bundle, SIGNER))


def test_js_refuses_a_symlinked_bundle_file(bundle, tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_bytes((bundle / "eval_tree.json").read_bytes())
    (bundle / "eval_tree.json").unlink()
    (bundle / "eval_tree.json").symlink_to(target)
    js = verify_with_js(bundle, SIGNER)
    assert js["ok"] is False
    assert js["checks"]["eval_tree.load"] is False and js["checks"]["manifest.sha256"] is False
    assert any("symlink" in e for e in js["errors"]), js["errors"]


# --- the five-line EAS SDK check documented in docs/attestations.md, run as written ------------------

OTHER = "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1"


def documented_check() -> str:
    """The JavaScript block under the doc's "Five-line check" heading, verbatim."""
    doc = (REPO / "docs" / "attestations.md").read_text()
    found = re.search(r"^### Five-line check with the EAS SDK\n.*?^```js\n(.*?)^```$", doc, re.S | re.M)
    assert found, "docs/attestations.md has no ```js block under '### Five-line check with the EAS SDK'"
    return found.group(1)


def _run_check(script: Path, attester: str, package: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NODE_PATH": str(NODE_MODULES)}
    return subprocess.run([_tool("node"), str(script), attester, str(package)], cwd=script.parent, env=env,
                          capture_output=True, text=True, timeout=NODE_TIMEOUT_S, check=False)


@pytest.fixture(scope="module")
def check_script(node_modules, tmp_path_factory) -> Path:
    code = documented_check()
    assert len(code.strip().splitlines()) == 5, code
    script = tmp_path_factory.mktemp("doc") / "check.js"
    script.write_text(code)
    return script


def test_the_documented_check_passes_for_the_attester(bundle, check_script):
    run = _run_check(check_script, SIGNER, bundle / PACKAGE_FILE)
    assert run.returncode == 0, run.stderr
    assert SIGNER in run.stdout and attestation_uid({"attestation.json": (bundle / "attestation.json").read_bytes()}) in run.stdout
    assert bundle_attester(bundle) == SIGNER


def _package_edit(bundle: Path, edit: Callable[[Any], None]) -> Path:
    path = bundle / PACKAGE_FILE
    package = json.loads(path.read_text())
    edit(package)
    path.write_text(json.dumps(package))
    return path


def _data_and_uid(package: dict) -> None:
    """Another claim under the same signature, uid recomputed: only the signature can catch it."""
    att, m = package["sig"], package["sig"]["message"]
    m["data"] = m["data"][:-1] + ("1" if m["data"][-1] != "1" else "2")
    att["uid"] = eas.offchain_uid(schema=m["schema"], recipient=m["recipient"], time=int(m["time"]), expiration_time=int(m["expirationTime"]),
                                  revocable=m["revocable"], ref_uid=m["refUID"], data=m["data"], salt=m["salt"])


CHECK_FAILURES = {
    "another attester": (OTHER, None),
    "the attester not checksummed": (SIGNER.lower(), None),
    "package signer swapped, pinned to the swapper": (OTHER, lambda p: p.__setitem__("signer", OTHER)),
    "sig.message.time": (SIGNER, lambda p: _time(p["sig"])),
    "sig.message.data, uid recomputed": (SIGNER, _data_and_uid),
    "sig.signature.s": (SIGNER, lambda p: _s_plus_one(p["sig"])),
}


@pytest.mark.parametrize("case", list(CHECK_FAILURES))
def test_the_documented_check_fails_for_another_attester_or_a_tampered_package(bundle, check_script, case):
    attester, edit = CHECK_FAILURES[case]
    package = _package_edit(bundle, edit) if edit else bundle / PACKAGE_FILE
    run = _run_check(check_script, attester, package)
    assert run.returncode != 0, f"{case}: the documented check accepted it\n{run.stdout}"
    assert "OK" not in run.stdout and "Cannot find module" not in run.stderr, run.stderr


def test_the_readme_points_at_the_check():
    section = (REPO / "README.md").read_text().split("## DeltaOne and attestations", 1)[1].split("\n## ", 1)[0]
    assert PACKAGE_FILE in section and "docs/attestations.md" in section
