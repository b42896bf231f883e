import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
from eth_account import Account
from eth_utils import to_checksum_address

from teleprompt_assets.attest.bundles import (
    FILES,
    PACKAGE_FILE,
    SCHEMA,
    BundleConflict,
    Evidence,
    build_bundle,
    bundle_attester,
    package_attester,
    verify_bundle,
    write_bundle,
)
from teleprompt_assets.attest.eas import decode_data, schema_uid

KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3b362318")
SIGNER = Account.from_key(KEY).address
EVIDENCE = Evidence(
    program="ticket_router", model_version=3, baseline_version=2, program_state={"route": {"demos": [], "signature": {"instructions": "x"}}},
    eval_leaves=[(f"0x{i:064x}", 0 if i % 3 else 10**6, 10**6) for i in range(30)],
    data_leaves=[f"0x{i + 100:064x}" for i in range(12)],
    reward_leaves=[(to_checksum_address("0x" + "a" * 40), 600_000), (to_checksum_address("0x" + "b" * 40), 400_000)],
    seed=1, resamples=200, confidence_pct=95, time=1_790_000_000,
)


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return write_bundle(build_bundle(EVIDENCE, KEY), tmp_path / "bundle")


def test_bundle_verifies_and_is_deterministic(bundle, tmp_path):
    assert verify_bundle(bundle, SIGNER) == []
    again = write_bundle(build_bundle(EVIDENCE, KEY), tmp_path / "again")
    assert (again / "attestation.json").read_bytes() == (bundle / "attestation.json").read_bytes()
    att = json.loads((bundle / "attestation.json").read_text())
    assert att["message"]["schema"] == schema_uid(SCHEMA)
    data = decode_data(SCHEMA, att["message"]["data"])
    assert (data["evalCount"], data["contributorCount"], data["modelVersion"], data["baselineVersion"]) == (30, 2, 3, 2)
    assert data["baselineScore"] == 10 * 10**6 and data["candidateScore"] == 30 * 10**6 and data["deltaPpm"] == 2 * 10**6


def test_wrong_signer_fails(bundle):
    assert any("recovers to" in p for p in verify_bundle(bundle, "0x" + "1" * 40))


@pytest.mark.parametrize("name", ["eval_tree.json", "data_tree.json", "rewards_tree.json", "program.json", "evaluation.json"])
def test_tampering_any_evidence_file_fails(bundle, name):
    path = bundle / name
    text = path.read_text()
    changed = text.replace('"1"', '"2"', 1) if '"1"' in text else text.replace("1", "2", 1)
    if name == "program.json":
        changed = text.replace('"x"', '"y"')
    assert changed != text
    path.write_text(changed)
    assert verify_bundle(bundle, SIGNER)


@pytest.mark.parametrize("field", ["time", "refUID", "salt", "data", "recipient", "schema"])
def test_tampering_the_attestation_message_fails(bundle, field):
    path = bundle / "attestation.json"
    att = json.loads(path.read_text())
    value = att["message"][field]
    att["message"][field] = str(int(value) + 1) if field == "time" else value[:-1] + ("1" if value[-1] != "1" else "2")
    path.write_text(json.dumps(att))
    assert verify_bundle(bundle, SIGNER)


def test_a_bundle_signed_for_another_chain_does_not_verify(tmp_path, monkeypatch):
    monkeypatch.setenv("TELEPROMPT_EAS_CHAIN_ID", "1")
    mainnet = write_bundle(build_bundle(EVIDENCE, KEY), tmp_path / "mainnet")
    assert verify_bundle(mainnet, SIGNER) == []
    monkeypatch.delenv("TELEPROMPT_EAS_CHAIN_ID")
    assert any("chainId" in p or "domain" in p for p in verify_bundle(mainnet, SIGNER))


def _rehash_manifest(folder):
    manifest = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in FILES}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _bump(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    text = str(value)
    if text.isdigit():
        return str(int(text) + 1)
    return text[:-1] + ("1" if text[-1] != "1" else "2")


def test_every_attestation_field_and_every_leaf_is_covered(tmp_path):
    """Change any single value (manifest re-hashed, so only the real check can catch it): it fails."""
    files = build_bundle(EVIDENCE, KEY)
    attestation = json.loads(files["attestation.json"])
    targets = [("attestation.json", ("uid",)), ("attestation.json", ("version",))]
    targets += [("attestation.json", ("domain", k)) for k in attestation["domain"]]
    targets += [("attestation.json", ("message", k)) for k in attestation["message"]]
    targets += [("attestation.json", ("signature", k)) for k in attestation["signature"]]
    for name in ("eval_tree.json", "data_tree.json", "rewards_tree.json"):
        dump = json.loads(files[name])
        targets += [(name, ("values", i, "value", j)) for i, v in enumerate(dump["values"]) for j in range(len(v["value"]))]
    for n, (name, path) in enumerate(targets):
        folder = write_bundle(files, tmp_path / f"b{n}")
        doc = json.loads((folder / name).read_text())
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = _bump(node[path[-1]])
        (folder / name).write_text(json.dumps(doc))
        _rehash_manifest(folder)
        assert verify_bundle(folder, SIGNER), f"{name} {path} changed but the bundle still verifies"
    folder = write_bundle(files, tmp_path / "program")
    state = json.loads((folder / "program.json").read_text())
    state["route"]["signature"]["instructions"] = "changed"
    (folder / "program.json").write_text(json.dumps(state))
    _rehash_manifest(folder)
    assert any("programHash" in p for p in verify_bundle(folder, SIGNER))


# --- whom to trust (issue 14 item 8): the bundle names its attester in the EAS SDK's package form ----

OTHER = "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1"
# attestation.json of EVIDENCE signed by KEY before the package existed: adding it changes no signed byte
ATTESTATION_UID = "0x0b7b4e30a7fa32bfdb9fe28e592f22a8e1808244d5bc711406e661571e79dd80"
ATTESTATION_SHA256 = "299ce67849e9ecc8d26af1c13ada904ed382869536e7d4802720dd934b06dbd5"


def test_the_bundle_holds_the_sdk_package_with_its_attester(bundle):
    package = json.loads((bundle / PACKAGE_FILE).read_text())
    assert package == {"sig": json.loads((bundle / "attestation.json").read_text()), "signer": SIGNER}
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert set(manifest) == set(FILES) and PACKAGE_FILE in manifest
    assert manifest[PACKAGE_FILE] == hashlib.sha256((bundle / PACKAGE_FILE).read_bytes()).hexdigest()
    assert bundle_attester(bundle) == SIGNER


def test_the_package_changes_neither_the_attestation_nor_determinism():
    files = build_bundle(EVIDENCE, KEY)
    assert json.loads(files["attestation.json"])["uid"] == ATTESTATION_UID
    assert hashlib.sha256(files["attestation.json"]).hexdigest() == ATTESTATION_SHA256
    assert build_bundle(EVIDENCE, KEY) == files
    assert package_attester(files) == SIGNER


def _edit_package(folder: Path, change) -> None:
    package = json.loads((folder / PACKAGE_FILE).read_text())
    change(package)
    (folder / PACKAGE_FILE).write_text(json.dumps(package, sort_keys=True, indent=2))
    _rehash_manifest(folder)


PACKAGE_TAMPERS = {
    "signer is someone else": (lambda p: p.__setitem__("signer", OTHER), "recovers to"),
    "signer lowercased": (lambda p: p.__setitem__("signer", SIGNER.lower()), "EIP-55"),
    "signer missing": (lambda p: p.pop("signer"), "sig, signer"),
    "extra key": (lambda p: p.__setitem__("note", "trust me"), "sig, signer"),
    "sig.message.time": (lambda p: p["sig"]["message"].__setitem__("time", str(int(p["sig"]["message"]["time"]) + 1)), "attestation.json"),
    "sig.version as a float": (lambda p: p["sig"].__setitem__("version", 2.0), "attestation.json"),
    "sig.signature.v as true": (lambda p: p["sig"]["signature"].__setitem__("v", True), "attestation.json"),
    "sig.uid": (lambda p: p["sig"].__setitem__("uid", "0x" + "11" * 32), "attestation.json"),
}


@pytest.mark.parametrize("case", list(PACKAGE_TAMPERS))
def test_a_package_that_disagrees_with_the_bundle_fails(bundle, case):
    change, hint = PACKAGE_TAMPERS[case]
    _edit_package(bundle, change)
    problems = verify_bundle(bundle, SIGNER)
    assert any(p.startswith(PACKAGE_FILE) and hint in p for p in problems), problems
    assert not any(p.startswith("manifest") for p in problems), problems
    assert bundle_attester(bundle) is None


@pytest.mark.parametrize("body", [b"[]", b"not json", b'{"sig": [], "signer": "0x"}'])
def test_a_malformed_package_fails_and_names_no_attester(bundle, body):
    (bundle / PACKAGE_FILE).write_bytes(body)
    _rehash_manifest(bundle)
    assert any(p.startswith(PACKAGE_FILE) for p in verify_bundle(bundle, SIGNER))
    assert bundle_attester(bundle) is None


def test_a_bundle_without_the_package_fails_and_names_no_attester(bundle):
    (bundle / PACKAGE_FILE).unlink()
    assert verify_bundle(bundle, SIGNER) == [f"missing file: {PACKAGE_FILE}"]
    assert bundle_attester(bundle) is None
    assert bundle_attester(bundle.parent / "nowhere") is None


def test_an_expected_signer_is_compared_with_the_package_signer_too(bundle):
    problems = verify_bundle(bundle, OTHER)
    assert any(p.startswith(PACKAGE_FILE) and SIGNER in p and OTHER in p for p in problems), problems


def test_a_signer_swapped_in_the_package_and_the_pin_still_fails(bundle):
    """A forger who names himself as signer and is pinned as the attester: the signature is not his."""
    _edit_package(bundle, lambda p: p.__setitem__("signer", OTHER))
    problems = verify_bundle(bundle, OTHER)
    assert any("recovers to" in p for p in problems), problems


def _old_format(files: dict[str, bytes]) -> dict[str, bytes]:
    """The bundle as written before the package existed: same attestation, manifest without it."""
    old = {name: body for name, body in files.items() if name not in (PACKAGE_FILE, "manifest.json")}
    old["manifest.json"] = json.dumps({n: hashlib.sha256(b).hexdigest() for n, b in old.items()}, sort_keys=True, indent=2).encode()
    return old


def test_re_running_over_a_bundle_from_before_the_package_upgrades_it(tmp_path):
    files = build_bundle(EVIDENCE, KEY)
    folder = write_bundle(_old_format(files), tmp_path / "outbox" / "uid", tmp_path / "staging")
    assert write_bundle(files, folder, tmp_path / "staging") == folder
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == files
    assert verify_bundle(folder, SIGNER) == []
    assert [p.name for p in folder.parent.iterdir()] == ["uid"]


def test_re_running_over_a_different_attestation_still_conflicts(tmp_path):
    files = build_bundle(EVIDENCE, KEY)
    other = _old_format(build_bundle(dataclasses.replace(EVIDENCE, time=EVIDENCE.time + 1), KEY))
    folder = write_bundle(other, tmp_path / "outbox" / "uid")
    with pytest.raises(BundleConflict):
        write_bundle(files, folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == other
