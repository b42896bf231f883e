"""DeltaOne attestations (DESIGN §7): the evidence bundle, its signature, and its verification.

A bundle is a folder of files, each named in ``manifest.json`` with its sha256:
- ``attestation.json``: EAS off-chain attestation v2 (EIP-712), the shape the EAS SDK verifies;
- ``eval_tree.json``, ``data_tree.json``, ``rewards_tree.json``: OpenZeppelin ``standard-v1`` dumps;
- ``program.json``: the compiled program's JSON state (keccak256 = programHash);
- ``evaluation.json``: the bootstrap parameters, so the confidence bound can be recomputed.
Time and salt derive from the content, so re-running a partition yields the identical attestation.

The salt also seals the evidence files: salt = keccak256("teleprompt-salt\\x00" ‖ program ‖
uint64 modelVersion ‖ data ‖ evidenceDigest), where evidenceDigest = keccak256 of the lines
``<name>:<sha256 hex>\\n`` of every file but ``attestation.json`` and ``manifest.json``, in name order.
The salt is signed, so changing any byte of any evidence file (even one no other check reads,
such as the bootstrap parameters) breaks verification, whatever is done to the manifest.

Bundles reach the outbox atomically: written and fsynced in a staging folder, then renamed into
place, so a crash never leaves a partial bundle where a bundle is expected.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_utils import keccak

from teleprompt_assets import eas
from teleprompt_assets.addresses import address_problem, checksummed
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
EVIDENCE_FILES = tuple(sorted(FILES[1:]))  # sealed by the salt
SALT_PREFIX = b"teleprompt-salt\x00"
EVALUATION_KEYS = {"seed", "resamples", "confidence_pct", "schema"}
MAX_RESAMPLES = 100_000  # a verifier re-runs the bootstrap: bound the work a bundle can ask for


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
        verifying_contract=checksummed(os.environ.get("TELEPROMPT_EAS_CONTRACT", base.verifying_contract), "TELEPROMPT_EAS_CONTRACT"),
    )


def _tree(values: Sequence[Sequence[Any]], encoding: list[str]) -> StandardMerkleTree:
    return StandardMerkleTree.of([list(v) for v in values], encoding)


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, indent=2).encode("utf-8")


def evidence_digest(files: Mapping[str, bytes]) -> bytes:
    """keccak256 of ``<name>:<sha256 hex>\\n`` for every evidence file, in name order."""
    lines = "".join(f"{name}:{hashlib.sha256(files[name]).hexdigest()}\n" for name in EVIDENCE_FILES)
    return keccak(lines.encode("utf-8"))


def derive_salt(program: str, model_version: int, data: bytes, digest: bytes) -> bytes:
    """The attestation's salt: deterministic, and binding the evidence files to the signature."""
    return keccak(SALT_PREFIX + program.encode("utf-8") + model_version.to_bytes(8, "big") + data + digest)


def build_bundle(evidence: Evidence, private_key: bytes, domain: eas.EasDomain | None = None) -> dict[str, bytes]:
    """The bundle's files (name → bytes), manifest included. Pure: same evidence, same bytes."""
    domain = domain or default_domain()
    eval_tree = _tree(evidence.eval_leaves, EVAL_LEAF)
    data_tree = _tree([(h,) for h in sorted(set(evidence.data_leaves))], DATA_LEAF)
    rewards_tree = _tree([(checksummed(a, f"reward leaf {i}"), w) for i, (a, w) in enumerate(evidence.reward_leaves)], REWARD_LEAF)
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
    files = {
        "eval_tree.json": _json_bytes(eval_tree.dump()),
        "data_tree.json": _json_bytes(data_tree.dump()),
        "rewards_tree.json": _json_bytes(rewards_tree.dump()),
        "program.json": program_bytes,
        "evaluation.json": _json_bytes({"seed": evidence.seed, "resamples": evidence.resamples, "confidence_pct": evidence.confidence_pct, "schema": SCHEMA}),
    }
    salt = derive_salt(evidence.program, evidence.model_version, data, evidence_digest(files))
    attestation = eas.sign_offchain(
        private_key, domain, schema=eas.schema_uid(SCHEMA), recipient=ZERO_ADDRESS, time=evidence.time,
        expiration_time=0, revocable=True, ref_uid=evidence.ref_uid, data=data, salt=salt,
    )
    files = {"attestation.json": _json_bytes(attestation), **files}
    files["manifest.json"] = _json_bytes({name: hashlib.sha256(body).hexdigest() for name, body in files.items()})
    return files


class BundleConflict(RuntimeError):
    """The outbox already holds different bytes under this bundle's uid; they are left untouched."""


def stage_bundle(files: Mapping[str, bytes], staging_root: Path, label: str = "bundle") -> Path:
    """Write every file, fsynced, into a fresh folder under ``staging_root`` that nothing else reads.

    Folders left by writers that died (their pid is gone) are removed first.
    """
    staging_root.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(staging_root)
    folder = staging_root / f"{label}.{os.getpid()}.{secrets.token_hex(4)}"
    folder.mkdir()
    for name, body in files.items():
        _write_file(folder / name, body)
    _fsync_dir(folder)
    return folder


def publish_bundle(staged: Path, folder: Path) -> Path:
    """Move a staged bundle to ``folder`` with one rename: readers see all of it or nothing.

    When ``folder`` already exists (a re-run, or a concurrent run of the same partition) it must hold
    the same bytes; the staged copy is then discarded. Different bytes raise :class:`BundleConflict`.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(staged, folder)
    except OSError:
        if not folder.is_dir():
            raise
        ours = {p.name: p.read_bytes() for p in staged.iterdir()}
        theirs = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
        if ours != theirs:
            differing = sorted(n for n in set(ours) | set(theirs) if ours.get(n) != theirs.get(n))
            raise BundleConflict(f"{folder} already holds a different bundle (differs in {', '.join(differing)}); left untouched, new copy kept at {staged}") from None
        shutil.rmtree(staged, ignore_errors=True)
        return folder
    _fsync_dir(folder.parent)
    return folder


def write_bundle(files: Mapping[str, bytes], folder: Path, staging_root: Path | None = None) -> Path:
    """Stage then publish (see :func:`stage_bundle`, :func:`publish_bundle`); returns ``folder``."""
    staged = stage_bundle(files, staging_root if staging_root is not None else folder.parent / ".staging", folder.name)
    return publish_bundle(staged, folder)


def _write_file(path: Path, body: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view, written = memoryview(body), 0
        while written < len(body):
            written += os.write(fd, view[written:])
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_abandoned(staging_root: Path) -> None:
    for entry in staging_root.iterdir():
        try:
            pid = int(entry.name.rsplit(".", 2)[1])
        except (IndexError, ValueError):
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
        except PermissionError:
            pass


def attestation_uid(files: Mapping[str, bytes]) -> str:
    return json.loads(files["attestation.json"])["uid"]


def verify_bundle(
    folder: Path, expected_signer: str | None = None, registered_program_hash: str | None = None, expected_domain: eas.EasDomain | None = None
) -> list[str]:
    """Every problem found, most basic first; an empty list means the bundle verifies.

    The domain is pinned (default: :func:`default_domain`), so a bundle signed for another chain or
    contract does not pass. Without ``expected_signer`` a valid signature by anyone passes: pin the
    attester to know who vouches for the bundle. Malformed input is reported, never raised.
    """
    try:
        files = {name: (folder / name).read_bytes() for name in (*FILES, "manifest.json")}
    except FileNotFoundError as exc:
        return [f"missing file: {Path(exc.filename).name}"]
    except OSError as exc:
        return [f"unreadable bundle: {exc}"]
    problems: list[str] = []
    manifest = _json_file(files, "manifest.json", problems)
    if isinstance(manifest, dict):
        for name in FILES:
            if manifest.get(name) != hashlib.sha256(files[name]).hexdigest():
                problems.append(f"manifest: sha256 of {name} does not match")
    attestation = _json_file(files, "attestation.json", problems)
    if not isinstance(attestation, dict):
        return problems + ["attestation.json: not a JSON object"]
    domain = expected_domain or default_domain()  # a misconfigured domain is raised, not reported as the bundle's fault
    try:
        problems += [f"attestation: {p}" for p in eas.verify_offchain(attestation, expected_signer, domain)]
        problems += _address_problems(attestation)
        message = attestation["message"]
        if str(message.get("schema", "")).lower() != eas.schema_uid(SCHEMA).lower():
            problems.append("attestation: schema uid is not the teleprompt DeltaOne schema")
        raw = bytes.fromhex(str(message["data"]).removeprefix("0x"))
        data = eas.decode_data(SCHEMA, raw)
    except Exception as exc:  # noqa: BLE001 - any failure to read the attestation is a verification failure
        return problems + [f"attestation: data does not decode with the schema ({type(exc).__name__})"]
    salt = "0x" + derive_salt(data["program"], data["modelVersion"], raw, evidence_digest(files)).hex()
    if str(message.get("salt", "")).lower() != salt:
        problems.append("salt: not derived from this bundle's evidence files (one was changed after signing)")
    problems += _guarded("trees", _check_trees, files, data)
    problems += _guarded("arithmetic", _check_arithmetic, files, data)
    program_hash = "0x" + keccak(files["program.json"]).hex()
    if _hex(data["programHash"]) != program_hash:
        problems.append("programHash: does not match keccak256(program.json)")
    if registered_program_hash is not None and registered_program_hash.lower() != program_hash:
        problems.append("programHash: does not match the registered model version")
    return problems


def _address_problems(attestation: Mapping[str, Any]) -> list[str]:
    """Our bundles spell every address checksummed. The signature and uid hash an address's bytes, not
    its spelling, so without this a re-cased address (manifest re-hashed) would verify: two byte
    strings for one attestation."""
    domain, message = attestation.get("domain"), attestation.get("message")
    found = {"domain.verifyingContract": domain.get("verifyingContract") if isinstance(domain, Mapping) else None,
             "message.recipient": message.get("recipient") if isinstance(message, Mapping) else None}
    return [f"attestation: {field}: {problem}" for field, value in found.items() if (problem := address_problem(value))]


def _json_file(files: Mapping[str, bytes], name: str, problems: list[str]) -> Any:
    try:
        return json.loads(files[name])
    except ValueError as exc:
        problems.append(f"{name}: not valid JSON ({exc})")
        return None


def _guarded(what: str, check: Any, *args: Any) -> list[str]:
    try:
        return check(*args)
    except Exception as exc:  # noqa: BLE001 - a malformed file is a failed check, not a crash
        return [f"{what}: cannot be checked ({type(exc).__name__}: {exc})"]


def _hex(value: Any) -> str:
    return "0x" + value.hex() if isinstance(value, (bytes, bytearray)) else str(value).lower()


def _check_trees(files: Mapping[str, bytes], data: dict[str, Any]) -> list[str]:
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
        values = [v["value"] for v in json.loads(files["rewards_tree.json"])["values"]]
        problems += [f"rewards_tree.json: leaf {i}: {p}" for i, (account, _) in enumerate(values) if (p := address_problem(account))]
        weights = [int(weight) for _, weight in values]
        if sum(weights) != 1_000_000:
            problems.append(f"rewards: weights sum to {sum(weights)}, not 1000000")
        if len(weights) != data["contributorCount"]:
            problems.append("contributorCount: does not match the rewards tree")
    return problems


def _evaluation_params(files: Mapping[str, bytes]) -> tuple[dict[str, Any] | None, list[str]]:
    """The bootstrap parameters, if they are exactly the documented ones and in range."""
    params = json.loads(files["evaluation.json"])
    if not isinstance(params, dict) or set(params) != EVALUATION_KEYS:
        return None, [f"evaluation.json: must hold exactly {', '.join(sorted(EVALUATION_KEYS))}"]
    problems = []
    if params["schema"] != SCHEMA:
        problems.append("evaluation.json: schema is not the attestation schema")
    ints = all(isinstance(params[k], int) and not isinstance(params[k], bool) for k in ("seed", "resamples", "confidence_pct"))
    if not ints or not 1 <= params["resamples"] <= MAX_RESAMPLES or not 1 <= params["confidence_pct"] <= 99 or params["seed"] < 0:
        return None, problems + [f"evaluation.json: seed, resamples (1..{MAX_RESAMPLES}) and confidence_pct (1..99) must be integers in range"]
    return params, problems


def _check_arithmetic(files: Mapping[str, bytes], data: dict[str, Any]) -> list[str]:
    leaves = [(int(v["value"][1]), int(v["value"][2])) for v in json.loads(files["eval_tree.json"])["values"]]
    qb, qc = [b for b, _ in leaves], [c for _, c in leaves]
    b, c, n = sum(qb), sum(qc), len(leaves)
    checks = {"evalCount": n, "baselineScore": b, "candidateScore": c, "deltaPpm": delta_ppm(b, c, n)}
    params, problems = _evaluation_params(files)
    if params is not None:
        checks["ciLowPpm"] = bootstrap_ci(qb, qc, params["seed"], params["resamples"], params["confidence_pct"])[0]
    for field, expected in checks.items():
        if data[field] != expected:
            problems.append(f"{field}: attested {data[field]}, recomputed {expected}")
    if not is_deltaone(b, c, n):
        problems.append("deltaone: the eval leaves do not meet the DeltaOne rule")
    return problems
