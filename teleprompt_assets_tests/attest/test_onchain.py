"""`onchain.submit_delegated` against the real EAS contracts, and reward proofs against real OpenZeppelin Solidity.

A module fixture starts `hardhat node` (from interop/node_modules, pinned by interop/package-lock.json)
on 127.0.0.1 and a free port, deploys SchemaRegistry and EAS from the
@ethereum-attestation-service/eas-contracts artifacts, and registers the teleprompt schema. RewardClaim.sol
is compiled by solc-js (npm `solc`) with @openzeppelin/contracts' MerkleProof. Without node the tests
skip, or fail when CI is set (the policy of interop/node.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_hash.auto import keccak
from eth_utils.address import to_checksum_address

from teleprompt_assets.attest import onchain
from teleprompt_assets.attest.bundles import SCHEMA, build_bundle, write_bundle
from teleprompt_assets.attest.eas import ZERO_ADDRESS, schema_uid
from teleprompt_assets.attest.merkle import StandardMerkleTree
from teleprompt_assets_tests.attest.test_bundles import EVIDENCE, KEY, SIGNER
from teleprompt_assets_tests.interop.node import INTEROP, _tool, ensure_node_modules

pytestmark = pytest.mark.e2e  # starts servers or separate processes: `make test-e2e`

REPO = Path(__file__).resolve().parents[2]
CLAIM_SOURCE = REPO / "teleprompt_assets" / "contracts" / "RewardClaim.sol"
EAS_ARTIFACTS = Path("@ethereum-attestation-service/eas-contracts/artifacts/contracts")
# Hardhat's default dev accounts (mnemonic "test test ... junk"): public, funded only on local chains.
RELAYER_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
CONTRIBUTOR_KEYS = (
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
)
CONTRIBUTORS = tuple(Account.from_key(k).address for k in CONTRIBUTOR_KEYS)
ONCHAIN_EVIDENCE = dataclasses.replace(EVIDENCE, reward_leaves=[(CONTRIBUTORS[0], 600_000), (CONTRIBUTORS[1], 400_000)])
ATTESTATION = "(bytes32,bytes32,uint64,uint64,uint64,bytes32,address,address,bool,bytes)"
START_TIMEOUT_S = 60


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_node(node: str, modules: Path, log: Any) -> tuple[subprocess.Popen, str]:
    """Start hardhat node; retry on another port if the chosen one was taken in between."""
    for _ in range(3):
        port = _free_port()
        proc = subprocess.Popen(
            [node, str(modules / "hardhat" / "internal" / "cli" / "bootstrap.js"), "node", "--hostname", "127.0.0.1", "--port", str(port)],
            cwd=INTEROP, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true"},
        )
        url = f"http://127.0.0.1:{port}"
        rpc = onchain.JsonRpc(url, timeout_s=2)
        deadline = time.monotonic() + START_TIMEOUT_S
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if rpc.chain_id() == 31337:
                    return proc, url
            except onchain.OnchainError:
                time.sleep(0.1)
        _stop(proc)
    log.flush()
    raise RuntimeError(f"hardhat node did not start:\n{Path(log.name).read_text()[-4000:]}")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def node_modules() -> Path:
    return ensure_node_modules()


@pytest.fixture(scope="module")
def rpc_url(node_modules: Path) -> Iterator[str]:
    node = _tool("node")
    with tempfile.NamedTemporaryFile("w+", prefix="hardhat-node-", suffix=".log") as log:
        proc, url = _start_node(node, node_modules, log)
        try:
            yield url
        finally:
            _stop(proc)


def _artifact(node_modules: Path, name: str) -> dict[str, Any]:
    return json.loads((node_modules / EAS_ARTIFACTS / f"{name}.sol" / f"{name}.json").read_text())


def _deploy_eas(rpc_url: str, node_modules: Path) -> tuple[str, str]:
    registry = onchain.deploy(rpc_url, RELAYER_KEY, _artifact(node_modules, "SchemaRegistry")["bytecode"])
    contract = onchain.deploy(rpc_url, RELAYER_KEY, _artifact(node_modules, "EAS")["bytecode"], ["address"], [registry])
    return registry, contract


@pytest.fixture(scope="module")
def eas_chain(rpc_url: str, node_modules: Path) -> dict[str, str]:
    registry, contract = _deploy_eas(rpc_url, node_modules)
    registered = onchain.register_schema(rpc_url, RELAYER_KEY, registry, SCHEMA)
    assert registered["registered"] and registered["uid"] == schema_uid(SCHEMA)
    return {"rpc": rpc_url, "registry": registry, "eas": contract}


@pytest.fixture(scope="module")
def reward_claim(node_modules: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [_tool("node"), str(INTEROP / "compile.js"), str(CLAIM_SOURCE)], cwd=INTEROP, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    compiled = json.loads(proc.stdout)
    assert compiled["solcVersion"].startswith("0.8.26+")
    return compiled["contracts"]["RewardClaim"]


def _bundle(tmp_path: Path, name: str, **changes: Any) -> Path:
    return write_bundle(build_bundle(dataclasses.replace(ONCHAIN_EVIDENCE, **changes), KEY), tmp_path / name)


def _attestation(chain: dict[str, str], uid: str) -> dict[str, Any]:
    (fields,) = onchain.call(chain["rpc"], chain["eas"], "getAttestation(bytes32)", [bytes.fromhex(uid[2:])], [ATTESTATION])
    names = ("uid", "schema", "time", "expirationTime", "revocationTime", "refUID", "recipient", "attester", "revocable", "data")
    decoded = dict(zip(names, fields, strict=True))
    return {**decoded, "recipient": to_checksum_address(decoded["recipient"]), "attester": to_checksum_address(decoded["attester"])}


def _h(raw: bytes) -> str:
    return "0x" + raw.hex()


def test_abi_and_typehash_match_the_eas_artifact(node_modules):
    abi = _artifact(node_modules, "EAS")["abi"]

    def canonical(param: dict) -> str:
        if param["type"].startswith("tuple"):
            return "(" + ",".join(canonical(c) for c in param["components"]) + ")" + param["type"][5:]
        return param["type"]

    (fn,) = [f for f in abi if f.get("name") == "attestByDelegation"]
    assert f"attestByDelegation({','.join(canonical(p) for p in fn['inputs'])})" == onchain._ATTEST_BY_DELEGATION
    source = (node_modules / "@ethereum-attestation-service/eas-contracts/contracts/eip1271/EIP1271Verifier.sol").read_text()
    assert f"ATTEST_TYPEHASH = {onchain.ATTEST_TYPEHASH};" in source


def test_submit_lands_the_bundle_attestation(eas_chain, tmp_path):
    bundle = _bundle(tmp_path, "v3")
    message = json.loads((bundle / "attestation.json").read_text())["message"]
    result = onchain.submit_delegated(bundle, eas_chain["rpc"], KEY, RELAYER_KEY, eas_chain["eas"])
    onchain_att = _attestation(eas_chain, result["uid"])
    assert _h(onchain_att["uid"]) == result["uid"] != json.loads((bundle / "attestation.json").read_text())["uid"]
    assert _h(onchain_att["schema"]) == schema_uid(SCHEMA) == result["schema"]
    assert onchain_att["attester"] == SIGNER == result["attester"]  # the bundle's signer, though the relayer paid
    assert _h(onchain_att["data"]) == message["data"]
    assert _h(onchain_att["refUID"]) == message["refUID"] == "0x" + "00" * 32
    assert onchain_att["recipient"] == ZERO_ADDRESS and onchain_att["revocable"] and onchain_att["expirationTime"] == 0
    assert onchain_att["time"] > 0 and result["easVersion"] == "1.3.0" and result["chainId"] == 31337
    assert onchain.JsonRpc(eas_chain["rpc"]).request("eth_getBalance", SIGNER, "latest") == "0x0"
    assert onchain.call(eas_chain["rpc"], eas_chain["eas"], "getNonce(address)", [SIGNER], ["uint256"]) == (1,)

    # The next version references this one by its on-chain uid; the chain records the link.
    follow_up = _bundle(tmp_path, "v4", model_version=4, baseline_version=3, ref_uid=result["uid"])
    linked = onchain.submit_delegated(follow_up, eas_chain["rpc"], KEY, RELAYER_KEY, eas_chain["eas"])
    assert _h(_attestation(eas_chain, linked["uid"])["refUID"]) == result["uid"]


def test_a_refuid_that_is_not_on_chain_is_refused_clearly(eas_chain, tmp_path):
    offchain_uid = json.loads((_bundle(tmp_path, "v3") / "attestation.json").read_text())["uid"]
    bundle = _bundle(tmp_path, "v4", model_version=4, baseline_version=3, ref_uid=offchain_uid)
    with pytest.raises(onchain.OnchainError, match="is not an attestation on chain 31337"):
        onchain.submit_delegated(bundle, eas_chain["rpc"], KEY, RELAYER_KEY, eas_chain["eas"])
    dropped = onchain.submit_delegated(bundle, eas_chain["rpc"], KEY, RELAYER_KEY, eas_chain["eas"], ref_uid="0x" + "00" * 32)
    assert _h(_attestation(eas_chain, dropped["uid"])["data"]) == json.loads((bundle / "attestation.json").read_text())["message"]["data"]


def test_unregistered_schema_says_how_to_register(rpc_url, node_modules, tmp_path):
    registry, contract = _deploy_eas(rpc_url, node_modules)
    bundle = _bundle(tmp_path, "v3")
    with pytest.raises(onchain.OnchainError, match=rf"not registered on chain 31337 \(SchemaRegistry {registry}\).*register_schema"):
        onchain.submit_delegated(bundle, rpc_url, KEY, RELAYER_KEY, contract)
    assert onchain.register_schema(rpc_url, RELAYER_KEY, registry, SCHEMA)["registered"]
    assert onchain.register_schema(rpc_url, RELAYER_KEY, registry, SCHEMA) == {
        "uid": schema_uid(SCHEMA), "txHash": None, "registered": False, "registry": registry,
    }
    assert onchain.submit_delegated(bundle, rpc_url, KEY, RELAYER_KEY, contract)["uid"]


def test_errors_hold_no_secrets(eas_chain, tmp_path):
    bundle = _bundle(tmp_path, "v3")
    other = "0x" + "42" * 32
    with pytest.raises(onchain.OnchainError, match="does not verify for attester") as wrong_attester:
        onchain.submit_delegated(bundle, eas_chain["rpc"], other, RELAYER_KEY, eas_chain["eas"])
    with pytest.raises(onchain.OnchainError, match="fund it") as poor_relayer:
        onchain.submit_delegated(bundle, eas_chain["rpc"], KEY, other, eas_chain["eas"])
    with pytest.raises(onchain.OnchainError, match="not a valid") as bad_key:
        onchain.submit_delegated(bundle, eas_chain["rpc"], KEY, "0x1234secret", eas_chain["eas"])
    with pytest.raises(onchain.OnchainError, match=r"http://127\.0\.0\.1:1: cannot reach the RPC for eth_chainId \(.*refused") as unreachable:
        onchain.submit_delegated(bundle, "http://user:hunter2@127.0.0.1:1/v3/apikey123", KEY, RELAYER_KEY, eas_chain["eas"])
    for exc in (wrong_attester, poor_relayer, bad_key, unreachable):
        text = str(exc.value)
        assert not any(s in text.lower() for s in ("42" * 32, KEY.hex(), RELAYER_KEY[2:], "1234secret", "hunter2", "apikey123")), text


def test_not_an_eas_contract(eas_chain, tmp_path):
    with pytest.raises(onchain.OnchainError, match="no contract at"):
        onchain.submit_delegated(_bundle(tmp_path, "v3"), eas_chain["rpc"], KEY, RELAYER_KEY, "0x" + "12" * 20)
    with pytest.raises(onchain.OnchainError, match="not an EAS contract"):
        onchain.submit_delegated(_bundle(tmp_path, "v3b"), eas_chain["rpc"], KEY, RELAYER_KEY, eas_chain["registry"])
    with pytest.raises(onchain.OnchainError, match=r"getSchema on .* failed .* right contract"):
        onchain.register_schema(eas_chain["rpc"], RELAYER_KEY, eas_chain["eas"], SCHEMA)


def test_reward_proofs_claim_in_openzeppelin_merkleproof(eas_chain, reward_claim, tmp_path):
    bundle = _bundle(tmp_path, "v3")
    tree = StandardMerkleTree.load(json.loads((bundle / "rewards_tree.json").read_text()))
    claim_contract = onchain.deploy(eas_chain["rpc"], RELAYER_KEY, reward_claim["bytecode"], ["bytes32"], [bytes.fromhex(tree.root[2:])])
    assert onchain.call(eas_chain["rpc"], claim_contract, "root()", [], ["bytes32"]) == (bytes.fromhex(tree.root[2:]),)
    errors = ("InvalidProof()", "AlreadyClaimed()")
    claimed_topic = "0x" + keccak(b"Claimed(address,uint256)").hex()

    def claim(key: str, amount: int, proof: list[str]) -> dict:
        calldata = onchain.encode_call("claim(uint256,bytes32[])", [amount, [bytes.fromhex(p[2:]) for p in proof]])
        return onchain.send_transaction(eas_chain["rpc"], key, claim_contract, calldata, role="claimant", errors=errors)

    entries = [(CONTRIBUTOR_KEYS[CONTRIBUTORS.index(account)], account, int(amount), tree.get_proof(index)) for index, (account, amount) in tree.entries()]
    assert len(entries) == 2
    for (key, _, amount, proof), (other_key, _, _, _) in zip(entries, entries[::-1], strict=True):
        with pytest.raises(onchain.OnchainError, match=r"reverted with InvalidProof\(\)"):
            claim(key, amount + 1, proof)
        with pytest.raises(onchain.OnchainError, match=r"InvalidProof\(\)"):  # a proof is bound to its account
            claim(other_key, amount, proof)
    for key, account, amount, proof in entries:
        receipt = claim(key, amount, proof)
        (log,) = [entry for entry in receipt["logs"] if entry["topics"][0] == claimed_topic]
        assert int(log["topics"][1], 16) == int(account, 16) and int(log["data"], 16) == amount
        assert onchain.call(eas_chain["rpc"], claim_contract, "claimed(address)", [account], ["bool"]) == (True,)
        with pytest.raises(onchain.OnchainError, match=r"AlreadyClaimed\(\)") as again:
            claim(key, amount, proof)
        assert again.value.revert_data == keccak(b"AlreadyClaimed()")[:4]


def test_rpc_credentials_in_the_url_are_sent_as_basic_auth_and_never_shown(rpc_url):
    port = rpc_url.rsplit(":", 1)[1]
    rpc = onchain.JsonRpc(f"http://alice:s3cr3t@127.0.0.1:{port}/")
    assert rpc.chain_id() == 31337
    assert "s3cr3t" not in repr(rpc) and rpc.label == f"http://127.0.0.1:{port}"
