"""DeltaOne attestations (DESIGN §7): the evidence bundle, its signature, and its verification.

A bundle is a folder of files, each named in ``manifest.json`` with its sha256:
- ``attestation.json``: EAS off-chain attestation v2 (EIP-712), the shape the EAS SDK verifies;
- ``eval_tree.json``, ``data_tree.json``, ``rewards_tree.json``: OpenZeppelin ``standard-v1`` dumps;
- ``program.json``: the compiled program's JSON state (keccak256 = programHash);
- ``evaluation.json``: the bootstrap parameters, so the confidence bound can be recomputed.
Time and salt derive from the content, so re-running a partition yields the identical attestation.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_utils import keccak, to_checksum_address

from teleprompt_assets import eas
from teleprompt_assets.evaluate import bootstrap_ci, delta_ppm, is_deltaone
from teleprompt_assets.merkle import StandardMerkleTree
from teleprompt_assets.registry import canonical_state_bytes

SCHEMA = (
    "string program,uint64 modelVersion,uint64 baselineVersion,bytes32 programHash,uint256 baselineScore,"
    "uint256 candidateScore,int256 deltaPpm,int256 ciLowPpm,uint32 evalCount,bytes32 evalRoot,bytes32 dataRoot,"
    "bytes32 rewardsRoot,uint32 contributorCount"
)
EVAL_LEAF = ["bytes32", "uint256", "uint256"]
DATA_LEAF = ["bytes32"]
REWARD_LEAF = ["address", "uint256"]
ZERO_UID = "0x" + "00" * 32
ZERO_ADDRESS = "0x" + "00" * 20
FILES = ("attestation.json", "eval_tree.json", "data_tree.json", "rewards_tree.json", "program.json", "evaluation.json")


@dataclass(frozen=True)
class Evidence:
    """Everything an attestation commits to."""

    program: str
    model_version: int
    baseline_version: int
    program_state: dict[str, Any]
    eval_leaves: Sequence[tuple[str, int, int]]
    data_leaves: Sequence[str]
    reward_leaves: Sequence[tuple[str, int]]
    seed: int
    resamples: int
    confidence_pct: int
    time: int
    ref_uid: str = ZERO_UID


def default_domain() -> eas.EasDomain:
    """The EIP-712 domain attestations are signed for: Sepolia's EAS unless configured otherwise."""
    base = eas.EasDomain()
    return eas.EasDomain(
        version=os.environ.get("TELEPROMPT_EAS_VERSION", base.version),
        chain_id=int(os.environ.get("TELEPROMPT_EAS_CHAIN_ID", base.chain_id)),
        verifying_contract=os.environ.get("TELEPROMPT_EAS_CONTRACT", base.verifying_contract),
    )


def _tree(values: Sequence[Sequence[Any]], encoding: list[str]) -> StandardMerkleTree:
    return StandardMerkleTree.of([list(v) for v in values], encoding)


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, indent=2).encode("utf-8")


def build_bundle(evidence: Evidence, private_key: bytes, domain: eas.EasDomain | None = None) -> dict[str, bytes]:
    """The bundle's files (name → bytes), manifest included. Pure: same evidence, same bytes."""
    domain = domain or default_domain()
    eval_tree = _tree(evidence.eval_leaves, EVAL_LEAF)
    data_tree = _tree([(h,) for h in sorted(set(evidence.data_leaves))], DATA_LEAF)
    rewards_tree = _tree([(to_checksum_address(a), w) for a, w in evidence.reward_leaves], REWARD_LEAF)
    qb = [b for _, b, _ in evidence.eval_leaves]
    qc = [c for _, _, c in evidence.eval_leaves]
    b, c, n = sum(qb), sum(qc), len(qb)
    ci_low, _ = bootstrap_ci(qb, qc, evidence.seed, evidence.resamples, evidence.confidence_pct)
    program_bytes = canonical_state_bytes(evidence.program_state)
    program_hash = "0x" + keccak(program_bytes).hex()
    values = [
        evidence.program, evidence.model_version, evidence.baseline_version, bytes.fromhex(program_hash[2:]),
        b, c, delta_ppm(b, c, n), ci_low, n, bytes.fromhex(eval_tree.root[2:]), bytes.fromhex(data_tree.root[2:]),
        bytes.fromhex(rewards_tree.root[2:]), len(evidence.reward_leaves),
    ]
    data = eas.encode_data(SCHEMA, values)
    salt = keccak(b"teleprompt-salt\x00" + evidence.program.encode() + evidence.model_version.to_bytes(8, "big") + data)
    attestation = eas.sign_offchain(
        private_key, domain, schema=eas.schema_uid(SCHEMA), recipient=ZERO_ADDRESS, time=evidence.time,
        expiration_time=0, revocable=True, ref_uid=evidence.ref_uid, data=data, salt=salt,
    )
    files = {
        "attestation.json": _json_bytes(attestation),
        "eval_tree.json": _json_bytes(eval_tree.dump()),
        "data_tree.json": _json_bytes(data_tree.dump()),
        "rewards_tree.json": _json_bytes(rewards_tree.dump()),
        "program.json": program_bytes,
        "evaluation.json": _json_bytes({"seed": evidence.seed, "resamples": evidence.resamples, "confidence_pct": evidence.confidence_pct, "schema": SCHEMA}),
    }
    files["manifest.json"] = _json_bytes({name: hashlib.sha256(body).hexdigest() for name, body in files.items()})
    return files


def write_bundle(files: dict[str, bytes], folder: Path) -> Path:
    """Write atomically enough for our needs: into a temp folder, then rename into place."""
    if folder.exists():
        return folder
    tmp = folder.with_name(folder.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        (tmp / name).write_bytes(body)
    tmp.rename(folder)
    return folder


def attestation_uid(files: dict[str, bytes]) -> str:
    return json.loads(files["attestation.json"])["uid"]


def verify_bundle(
    folder: Path, expected_signer: str | None = None, registered_program_hash: str | None = None, expected_domain: eas.EasDomain | None = None
) -> list[str]:
    """Every problem found, most basic first; an empty list means the bundle verifies.

    The domain is pinned (default: :func:`default_domain`), so a bundle signed for another chain or
    contract does not pass.
    """
    problems: list[str] = []
    try:
        files = {name: (folder / name).read_bytes() for name in (*FILES, "manifest.json")}
    except FileNotFoundError as exc:
        return [f"missing file: {Path(exc.filename).name}"]
    manifest = json.loads(files["manifest.json"])
    for name in FILES:
        if manifest.get(name) != hashlib.sha256(files[name]).hexdigest():
            problems.append(f"manifest: sha256 of {name} does not match")
    attestation = json.loads(files["attestation.json"])
    problems += [f"attestation: {p}" for p in eas.verify_offchain(attestation, expected_signer, expected_domain or default_domain())]
    if attestation.get("message", {}).get("schema", "").lower() != eas.schema_uid(SCHEMA).lower():
        problems.append("attestation: schema uid is not the teleprompt DeltaOne schema")
    try:
        data = eas.decode_data(SCHEMA, bytes.fromhex(attestation["message"]["data"].removeprefix("0x")))
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a verification failure
        return problems + [f"attestation: data does not decode with the schema ({type(exc).__name__})"]
    problems += _check_trees(files, data)
    problems += _check_arithmetic(files, data)
    program_hash = "0x" + keccak(files["program.json"]).hex()
    if _hex(data["programHash"]) != program_hash:
        problems.append("programHash: does not match keccak256(program.json)")
    if registered_program_hash is not None and registered_program_hash.lower() != program_hash:
        problems.append("programHash: does not match the registered model version")
    return problems


def _hex(value: Any) -> str:
    return "0x" + value.hex() if isinstance(value, (bytes, bytearray)) else str(value).lower()


def _check_trees(files: dict[str, bytes], data: dict[str, Any]) -> list[str]:
    problems = []
    trees = {}
    for name, field, encoding in (("eval_tree.json", "evalRoot", EVAL_LEAF), ("data_tree.json", "dataRoot", DATA_LEAF), ("rewards_tree.json", "rewardsRoot", REWARD_LEAF)):
        try:
            dump = json.loads(files[name])
            if list(dump.get("leafEncoding", [])) != encoding:
                raise ValueError(f"leaf encoding {dump.get('leafEncoding')} is not {encoding}")
            trees[field] = StandardMerkleTree.load(dump)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{name}: invalid tree ({exc})")
            continue
        if trees[field].root != _hex(data[field]):
            problems.append(f"{field}: root recomputed from {name} does not match the attestation")
    rewards = trees.get("rewardsRoot")
    if rewards is not None:
        weights = [int(v["value"][1]) for v in json.loads(files["rewards_tree.json"])["values"]]
        if sum(weights) != 1_000_000:
            problems.append(f"rewards: weights sum to {sum(weights)}, not 1000000")
        if len(weights) != data["contributorCount"]:
            problems.append("contributorCount: does not match the rewards tree")
    return problems


def _check_arithmetic(files: dict[str, bytes], data: dict[str, Any]) -> list[str]:
    problems = []
    leaves = [(int(v["value"][1]), int(v["value"][2])) for v in json.loads(files["eval_tree.json"])["values"]]
    qb, qc = [b for b, _ in leaves], [c for _, c in leaves]
    b, c, n = sum(qb), sum(qc), len(leaves)
    checks = {"evalCount": n, "baselineScore": b, "candidateScore": c, "deltaPpm": delta_ppm(b, c, n)}
    params = json.loads(files["evaluation.json"])
    checks["ciLowPpm"] = bootstrap_ci(qb, qc, params["seed"], params["resamples"], params["confidence_pct"])[0]
    for field, expected in checks.items():
        if data[field] != expected:
            problems.append(f"{field}: attested {data[field]}, recomputed {expected}")
    if not is_deltaone(b, c, n):
        problems.append("deltaone: the eval leaves do not meet the DeltaOne rule")
    return problems
