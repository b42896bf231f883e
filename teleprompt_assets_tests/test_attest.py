import json
from pathlib import Path

import pytest
from eth_account import Account
from eth_utils import to_checksum_address

from teleprompt_assets.attest import SCHEMA, Evidence, build_bundle, verify_bundle, write_bundle
from teleprompt_assets.eas import decode_data, schema_uid

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
    import hashlib

    manifest = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in ("attestation.json", "eval_tree.json", "data_tree.json", "rewards_tree.json", "program.json", "evaluation.json")}
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
