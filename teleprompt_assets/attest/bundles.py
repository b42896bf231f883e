"""DeltaOne attestations (docs/architecture.md#attestation-schema-and-bundle-files): the evidence bundle, its signature, and its verification.

A bundle is a folder of files, each named in ``manifest.json`` with its sha256:
- ``attestation.json``: EAS off-chain attestation v2 (EIP-712), the shape the EAS SDK verifies;
- ``offchain_package.json``: the EAS SDK's package ``{sig, signer}``: the same attestation with the
  attester's address, so an outside verifier needs only this file and the address the operator publishes;
- ``eval_tree.json``, ``data_tree.json``, ``rewards_tree.json``: OpenZeppelin ``standard-v1`` dumps;
- ``program.json``: the compiled program's JSON state (keccak256 = programHash);
- ``evaluation.json``: the bootstrap parameters, so the confidence bound can be recomputed.
Time and salt derive from the content, so re-running a partition yields the identical attestation.

The salt also seals the evidence files: salt = keccak256("teleprompt-salt\\x00" ‖ program ‖
uint64 modelVersion ‖ data ‖ evidenceDigest), where evidenceDigest = keccak256 of the lines
``<name>:<sha256 hex>\\n`` of the evidence files (all but ``attestation.json``, ``offchain_package.json``
and ``manifest.json``), in name order. The salt is signed, so changing any byte of any evidence file
(even one no other check reads, such as the bootstrap parameters) breaks verification, whatever is
done to the manifest. The package holds the signature, so no salt can seal it: the verifier instead
requires its ``sig`` to be ``attestation.json`` and its ``signer`` to be whom the signature recovers to.

A bundle is treated as hostile input: the verifier opens only the names above, in the bundle folder
itself, never through a link, and refuses a manifest naming anything else. What it will read and
compute is bounded (``MAX_FILE_BYTES``, derived from the leaf bounds ``MAX_TREE_LEAVES``,
``MAX_EVAL_LEAVES`` and ``MAX_REWARD_LEAVES``; ``MAX_BOOTSTRAP_DRAWS``) and checked before any costly
step: a file's size before it is read, its nesting and its count of objects and arrays before it is
parsed (:func:`read_bundle_json`, the one way any caller reads a bundle's JSON), its leaves before
anything is hashed. :func:`build_bundle` refuses evidence beyond the same bounds, so no bundle is
signed that a verifier would refuse.

Bundles reach the outbox atomically: written and fsynced in a staging folder, then renamed into
place, so a crash never leaves a partial bundle where a bundle is expected.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import shutil
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_utils import keccak

from teleprompt_assets.attest import eas
from teleprompt_assets.attest.merkle import StandardMerkleTree
from teleprompt_assets.core.addresses import address_problem, checksummed, contributor, contributor_problem
from teleprompt_assets.core.encoding import ZERO_ADDRESS, ZERO_BYTES32, canonical_bytes, canonical_json, loads_bounded
from teleprompt_assets.evaluate.deltaone import bootstrap_ci, delta_ppm, is_deltaone

SCHEMA = (
    "string program,uint64 modelVersion,uint64 baselineVersion,bytes32 programHash,uint256 baselineScore,"
    "uint256 candidateScore,int256 deltaPpm,int256 ciLowPpm,uint32 evalCount,bytes32 evalRoot,bytes32 dataRoot,"
    "bytes32 rewardsRoot,uint32 contributorCount"
)
EVAL_LEAF = ["bytes32", "uint256", "uint256"]
DATA_LEAF = ["bytes32"]
REWARD_LEAF = ["address", "uint256"]
ZERO_UID = ZERO_BYTES32
PACKAGE_FILE = "offchain_package.json"
MANIFEST_FILE = "manifest.json"
TREE_FILES = ("eval_tree.json", "data_tree.json", "rewards_tree.json")
EVIDENCE_FILES = ("data_tree.json", "eval_tree.json", "evaluation.json", "program.json", "rewards_tree.json")  # sealed by the salt
FILES = ("attestation.json", PACKAGE_FILE, *TREE_FILES, "program.json", "evaluation.json")  # what the manifest lists
BUNDLE_FILES = (*FILES, MANIFEST_FILE)  # the whole bundle: a verifier opens these names and no others
SALT_PREFIX = b"teleprompt-salt\x00"
EVALUATION_KEYS = {"seed", "resamples", "confidence_pct", "schema"}
PACKAGE_KEYS = {"sig", "signer"}

# Bounds on what verifying one bundle costs (docs/attestations.md, "Hostile bundles and limits"). A tree leaf costs about
# 35-60 µs to re-hash; a bootstrap draw about 0.4 µs. The pipeline's defaults (5,000 held-out
# examples, 1,000 resamples) sit far below them.
MAX_RESAMPLES = 100_000
MAX_TREE_LEAVES = 1_000_000  # any tree, and the data tree's own bound (traces of a training split): about a minute to re-hash
MAX_EVAL_LEAVES = 100_000  # held-out examples (the bootstrap bound below usually binds first)
MAX_REWARD_LEAVES = 100_000  # contributors of one attestation
MAX_BOOTSTRAP_DRAWS = 50_000_000  # eval leaves × resamples: about 20 s of bootstrap at most
# A dump's bytes a leaf, at most, as _json_bytes writes it (two tree nodes of 66 hex characters, the
# value entry with its index below 2,000,000 and amounts up to 1,000,000; measured: 289 data, 326
# eval, 283 rewards), and what a dump holds besides its leaves. A tree file's byte bound follows from
# its leaf bound, so no file is read, let alone parsed, that could not hold a tree the verifier accepts.
BYTES_PER_LEAF = {"data_tree.json": 300, "eval_tree.json": 340, "rewards_tree.json": 300}
DUMP_OVERHEAD_BYTES = 4096
JSON_DEPTH = 16  # the deepest bundle file (offchain_package.json) nests 5 levels
CONTAINERS_PER_LEAF = 2  # a dump's objects and arrays: a value entry and its value list a leaf


def leaf_limit(name: str) -> int:
    """The most leaves the tree dump ``name`` may hold."""
    own = {"eval_tree.json": MAX_EVAL_LEAVES, "rewards_tree.json": MAX_REWARD_LEAVES}.get(name, MAX_TREE_LEAVES)
    return min(own, MAX_TREE_LEAVES)


def _leaf_bound_name(name: str) -> str:
    return {"eval_tree.json": "MAX_EVAL_LEAVES", "rewards_tree.json": "MAX_REWARD_LEAVES"}.get(name, "MAX_TREE_LEAVES")


MAX_FILE_BYTES: dict[str, int] = {
    "attestation.json": 1 << 20,
    PACKAGE_FILE: 1 << 20,
    "evaluation.json": 1 << 20,
    MANIFEST_FILE: 1 << 20,
    "program.json": 64 << 20,
    **{name: leaf_limit(name) * BYTES_PER_LEAF[name] + DUMP_OVERHEAD_BYTES for name in TREE_FILES},
}


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
    """The bundle's files (name → bytes), manifest included. Pure: same evidence, same bytes.

    The attester named in the package is the key's own address. Evidence beyond the verifier's
    bounds raises ValueError before anything is signed.
    """
    _check_evidence_bounds(evidence)
    domain = domain or default_domain()
    eval_tree = _tree(evidence.eval_leaves, EVAL_LEAF)
    data_tree = _tree([(h,) for h in sorted(set(evidence.data_leaves))], DATA_LEAF)
    rewards_tree = _tree([(contributor(a, f"reward leaf {i}"), w) for i, (a, w) in enumerate(evidence.reward_leaves)], REWARD_LEAF)
    qb = [b for _, b, _ in evidence.eval_leaves]
    qc = [c for _, _, c in evidence.eval_leaves]
    b, c, n = sum(qb), sum(qc), len(qb)
    ci_low, _ = bootstrap_ci(qb, qc, evidence.seed, evidence.resamples, evidence.confidence_pct)
    program_bytes = canonical_bytes(evidence.program_state)
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
    signer = Account.from_key(private_key).address
    files = {"attestation.json": _json_bytes(attestation), PACKAGE_FILE: _json_bytes(eas.offchain_package(attestation, signer)), **files}
    files[MANIFEST_FILE] = _json_bytes({name: hashlib.sha256(body).hexdigest() for name, body in files.items()})
    oversized = [f"{name} ({len(body):,} bytes, limit {MAX_FILE_BYTES[name]:,})" for name, body in files.items() if len(body) > MAX_FILE_BYTES[name]]
    if oversized:
        raise ValueError(f"a verifier would refuse this bundle: over MAX_FILE_BYTES: {', '.join(oversized)}")
    return files


def _check_evidence_bounds(evidence: Evidence) -> None:
    counts = {"eval_tree.json": ("eval leaves", len(evidence.eval_leaves)), "data_tree.json": ("distinct data leaves", len(set(evidence.data_leaves))),
              "rewards_tree.json": ("reward leaves", len(evidence.reward_leaves))}
    over = [f"{count:,} {what} exceed {_leaf_bound_name(name)} ({leaf_limit(name):,})" for name, (what, count) in counts.items() if count > leaf_limit(name)]
    if over:
        raise ValueError(f"a verifier would refuse this bundle: {', '.join(over)}; sample the training set or cap the holdout")
    if not 1 <= evidence.resamples <= MAX_RESAMPLES:
        raise ValueError(f"resamples must be 1..{MAX_RESAMPLES:,} (MAX_RESAMPLES), got {evidence.resamples:,}")
    draws = len(evidence.eval_leaves) * evidence.resamples
    if draws > MAX_BOOTSTRAP_DRAWS:
        raise ValueError(
            f"a verifier would refuse this bundle: {len(evidence.eval_leaves):,} eval leaves × {evidence.resamples:,} resamples = {draws:,} "
            f"bootstrap draws exceed MAX_BOOTSTRAP_DRAWS ({MAX_BOOTSTRAP_DRAWS:,}); cap the holdout or lower the resamples"
        )


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
        if PACKAGE_FILE in ours and theirs == _without_package(ours):
            return _replace(staged, folder)
        if ours != theirs:
            differing = sorted(n for n in set(ours) | set(theirs) if ours.get(n) != theirs.get(n))
            raise BundleConflict(f"{folder} already holds a different bundle (differs in {', '.join(differing)}); left untouched, new copy kept at {staged}") from None
        shutil.rmtree(staged, ignore_errors=True)
        return folder
    _fsync_dir(folder.parent)
    return folder


def _without_package(files: Mapping[str, bytes]) -> dict[str, bytes]:
    """The same bundle as written before it carried the package: identical signed bytes."""
    old = {name: body for name, body in files.items() if name not in (PACKAGE_FILE, MANIFEST_FILE)}
    return {**old, MANIFEST_FILE: _json_bytes({name: hashlib.sha256(body).hexdigest() for name, body in old.items()})}


def _replace(staged: Path, folder: Path) -> Path:
    """Swap in the staged bundle by two renames: a reader meanwhile finds no bundle, never part of one."""
    aside = folder.with_name(f".{folder.name}.replaced.{os.getpid()}.{secrets.token_hex(4)}")
    os.rename(folder, aside)
    try:
        os.rename(staged, folder)
    except OSError:
        if not folder.is_dir():
            os.rename(aside, folder)
            raise
        shutil.rmtree(aside, ignore_errors=True)  # a concurrent run of the partition published first
        return publish_bundle(staged, folder)
    shutil.rmtree(aside, ignore_errors=True)
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
    attester to know who vouches for the bundle. Malformed or hostile input is reported, never
    raised: files other than the bundle's own are never opened, links never followed, and a bundle
    over the bounds is refused before any costly step.
    """
    files, problems = read_bundle_files(folder, BUNDLE_FILES)
    if problems:
        return problems
    docs, problems = _parse_json_files(files)
    if problems:
        return problems
    problems += _manifest_problems(docs, files)
    over = _bound_problems(docs)
    if over:
        return problems + over + ["bundle: over the verifier's bounds, not checked further"]
    attestation = docs.get("attestation.json")
    if not isinstance(attestation, dict):
        return problems + ["attestation.json: not a JSON object"]
    domain = expected_domain or default_domain()  # a misconfigured domain is raised, not reported as the bundle's fault
    try:
        problems += [f"attestation: {p}" for p in eas.verify_offchain(attestation, expected_signer, domain)]
        problems += _address_problems(attestation)
        problems += _guarded(PACKAGE_FILE, _package_problems, docs, attestation, expected_signer)
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
    problems += _guarded("trees", _check_trees, docs, data)
    problems += _guarded("arithmetic", _check_arithmetic, docs, data)
    program_hash = "0x" + keccak(files["program.json"]).hex()
    if _hex(data["programHash"]) != program_hash:
        problems.append("programHash: does not match keccak256(program.json)")
    if registered_program_hash is not None and registered_program_hash.lower() != program_hash:
        problems.append("programHash: does not match the registered model version")
    return problems


def attested_data(folder: Path) -> dict[str, Any] | None:
    """The attestation's decoded ``data`` (program, modelVersion, programHash…), read behind the
    verifier's guards, or None when it cannot be read or decoded: for looking up what a bundle claims
    to attest (``teleprompt verify`` against the registry) before :func:`verify_bundle` says whether
    it holds. Nothing here is verified."""
    docs, problems = read_bundle_json(folder, ("attestation.json",))
    if problems:
        return None
    try:
        return eas.decode_data(SCHEMA, bytes.fromhex(str(docs["attestation.json"]["message"]["data"]).removeprefix("0x")))
    except Exception:  # noqa: BLE001 - a malformed attestation attests nothing; verify_bundle reports why
        return None


@dataclass(frozen=True)
class AttestedProgram:
    program: str
    model_version: int
    program_hash: str
    attester: str


def attested_program(folder: Path, expected_signer: str | None = None, expected_domain: eas.EasDomain | None = None) -> AttestedProgram:
    """What a bundle's signature vouches for about its program: its name, model version and
    programHash, with whom the signature recovers to. Raises ``ValueError`` (one line) unless the
    attestation is readable behind the guards, has the teleprompt schema, and its signature holds for
    the pinned domain (and ``expected_signer`` when given). This is what a serving app needs to check
    a program state before loading it; the evidence (trees, arithmetic) is :func:`verify_bundle`'s."""
    docs, problems = read_bundle_json(folder, ("attestation.json",))
    attestation = docs.get("attestation.json")
    if not problems and not isinstance(attestation, dict):
        problems = ["attestation.json: not a JSON object"]
    if problems:
        raise ValueError(problems[0])
    try:
        problems = eas.verify_offchain(attestation, expected_signer, expected_domain or default_domain())
        message = attestation["message"]
        if str(message.get("schema", "")).lower() != eas.schema_uid(SCHEMA).lower():
            problems.append("schema uid is not the teleprompt DeltaOne schema")
        data = eas.decode_data(SCHEMA, bytes.fromhex(str(message["data"]).removeprefix("0x")))
        signer = eas.recover_signer(attestation)
    except Exception as exc:  # noqa: BLE001 - any failure to read the attestation is a refusal
        raise ValueError(f"attestation.json: does not decode as a teleprompt attestation ({type(exc).__name__})") from None
    if problems:
        raise ValueError(f"attestation.json: {problems[0]}")
    return AttestedProgram(data["program"], int(data["modelVersion"]), _hex(data["programHash"]), signer)


def bundle_attester(folder: Path) -> str | None:
    """Whom a bundle names as its attester (its package's ``signer``, EIP-55), for ``teleprompt status``
    and run metadata; None when it names none its signature backs (a bundle from before the package,
    or a package that disagrees with the attestation). Showing a name is not verifying the bundle:
    :func:`verify_bundle` with the published address does that."""
    files, problems = read_bundle_files(folder, ("attestation.json", PACKAGE_FILE))
    return None if problems else package_attester(files)


def package_attester(files: Mapping[str, bytes]) -> str | None:
    """:func:`bundle_attester` for a bundle in memory (as :func:`build_bundle` returns it)."""
    try:
        package = _parse(PACKAGE_FILE, files[PACKAGE_FILE])
        attestation = _parse("attestation.json", files["attestation.json"])
        if not isinstance(package, dict) or set(package) != PACKAGE_KEYS or canonical_json(package["sig"]) != canonical_json(attestation):
            return None
        signer = package["signer"]
        return signer if address_problem(signer) is None and eas.recover_signer(attestation) == signer else None
    except Exception:  # noqa: BLE001 - an unreadable package names nobody
        return None


def read_bundle_files(folder: Path, names: Sequence[str]) -> tuple[dict[str, bytes], list[str]]:
    """The named files of a bundle folder, and why any could not be taken.

    Each is opened relative to the folder itself, refused if it is a link (never followed), not a
    regular file (a FIFO would block, a folder is no file) or over its ``MAX_FILE_BYTES``.
    """
    try:
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return {}, [f"missing file: {names[0]}"]
    except OSError as exc:
        return {}, [f"unreadable bundle: {folder} ({exc.strerror})"]
    files: dict[str, bytes] = {}
    problems: list[str] = []
    try:
        for name in names:
            body, problem = _read_regular_file(dir_fd, name)
            if problem is None:
                files[name] = body
            else:
                problems.append(problem)
    finally:
        os.close(dir_fd)
    return files, problems


def _read_regular_file(dir_fd: int, name: str) -> tuple[bytes, str | None]:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError:
        return b"", f"missing file: {name}"
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):
            return b"", f"{name}: is a symlink; bundle files are never read through a link"
        return b"", f"{name}: unreadable ({exc.strerror})"
    try:
        info = os.fstat(fd)
        limit = MAX_FILE_BYTES[name]
        if not stat.S_ISREG(info.st_mode):
            return b"", f"{name}: not a regular file"
        if info.st_size > limit:
            return b"", f"{name}: {info.st_size:,} bytes, over its limit of {limit:,} (MAX_FILE_BYTES)"
        chunks, size = [], 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                return b"", f"{name}: grew past its limit of {limit:,} bytes (MAX_FILE_BYTES) while being read"
        return b"".join(chunks), None
    finally:
        os.close(fd)


def read_bundle_json(folder: Path, names: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """The named JSON files of a bundle folder, parsed, and why any could not be: every reader of a
    bundle (the verifier, ``teleprompt verify`` against the registry, ``proof``, ``submit``) goes through
    the same guards (:func:`read_bundle_files`, then :func:`_parse`)."""
    files, problems = read_bundle_files(folder, names)
    docs, unparsed = _parse_json_files(files, [n for n in names if n in files])
    return docs, problems + unparsed


def _parse(name: str, body: bytes) -> Any:
    """One bundle file's JSON, refused (``ValueError``) before parsing when it nests deeper than a bundle
    can (the C parser would overflow the stack: py_ecc raises the recursion limit to 100,000) or, for a
    tree dump, holds more objects and arrays than its leaf bound allows (a file of ``[],`` takes ~24
    bytes of memory a byte when parsed; a real dump ~2.5)."""
    if name in TREE_FILES:
        containers, most = body.count(b"{") + body.count(b"["), CONTAINERS_PER_LEAF * leaf_limit(name) + 16
        if containers > most:
            raise ValueError(f"{containers:,} JSON objects and arrays, more than {leaf_limit(name):,} leaves ({_leaf_bound_name(name)}) can need")
    return loads_bounded(body, max_depth=JSON_DEPTH, max_bytes=MAX_FILE_BYTES[name])


def _parse_json_files(files: Mapping[str, bytes], names: Sequence[str] = BUNDLE_FILES) -> tuple[dict[str, Any], list[str]]:
    docs: dict[str, Any] = {}
    problems: list[str] = []
    for name in names:
        if name == "program.json":
            continue  # hashed as bytes, never parsed
        try:
            docs[name] = _parse(name, files[name])
        except (ValueError, RecursionError) as exc:
            problems.append(f"{name}: not valid JSON ({str(exc)[:200]}); the bundle is not checked further")
    return docs, problems


def _manifest_problems(docs: Mapping[str, Any], files: Mapping[str, bytes]) -> list[str]:
    """Entries must be exactly the bundle's files: a manifest naming another path is refused, and that
    path is never opened (a tool trusting the manifest would read outside the bundle)."""
    if MANIFEST_FILE not in docs:
        return []  # not valid JSON, already reported
    manifest = docs[MANIFEST_FILE]
    if not isinstance(manifest, dict):
        return [f"{MANIFEST_FILE}: not a JSON object"]
    strangers = [name for name in manifest if name not in FILES]
    problems = [f"manifest: entry {_shown(name)} is not a file of the bundle (only {', '.join(FILES)}); it was not read" for name in strangers[:10]]
    if len(strangers) > 10:
        problems.append(f"manifest: {len(strangers) - 10} more entries that are not files of the bundle")
    for name in FILES:
        if name not in manifest:
            problems.append(f"manifest: no entry for {name}")
        elif manifest[name] != hashlib.sha256(files[name]).hexdigest():
            problems.append(f"manifest: sha256 of {name} does not match")
    return problems


def _shown(name: str) -> str:
    text = repr(name)
    return text if len(text) <= 120 else text[:117] + "…'"


def _bound_problems(docs: Mapping[str, Any]) -> list[str]:
    """Counted from the parsed JSON alone, before any hash, signature or bootstrap is computed."""
    problems = []
    leaves: dict[str, int] = {}
    for name in TREE_FILES:
        dump = docs.get(name)
        if not isinstance(dump, dict):
            continue
        values, nodes = dump.get("values"), dump.get("tree")
        leaves[name] = len(values) if isinstance(values, list) else 0
        limit, bound = leaf_limit(name), _leaf_bound_name(name)
        if leaves[name] > limit:
            problems.append(f"{name}: {leaves[name]:,} leaves, over the limit of {limit:,} for this tree ({bound})")
        elif isinstance(nodes, list) and len(nodes) > 2 * limit - 1:
            problems.append(f"{name}: {len(nodes):,} nodes, more than {limit:,} leaves ({bound}) can need")
    params = docs.get("evaluation.json")
    resamples = params.get("resamples") if isinstance(params, dict) else None
    if isinstance(resamples, int) and not isinstance(resamples, bool) and "eval_tree.json" in leaves:
        draws = leaves["eval_tree.json"] * resamples
        if draws > MAX_BOOTSTRAP_DRAWS:
            problems.append(
                f"evaluation.json: {leaves['eval_tree.json']:,} eval leaves × {resamples:,} resamples = {draws:,} bootstrap draws, "
                f"over the limit of {MAX_BOOTSTRAP_DRAWS:,} (MAX_BOOTSTRAP_DRAWS)"
            )
    return problems


def _package_problems(docs: Mapping[str, Any], attestation: Mapping[str, Any], expected_signer: str | None) -> list[str]:
    """The package cannot be sealed (it holds the signature), so it must agree with what is."""
    if PACKAGE_FILE not in docs:
        return []  # not valid JSON, already reported
    package = docs[PACKAGE_FILE]
    if not isinstance(package, dict) or set(package) != PACKAGE_KEYS:
        return [f"{PACKAGE_FILE}: must be the EAS SDK's package object, exactly {{sig, signer}}"]
    problems = []
    if canonical_json(package["sig"]) != canonical_json(attestation):
        problems.append(f"{PACKAGE_FILE}: sig is not the attestation in attestation.json")
    signer = package["signer"]
    if (problem := address_problem(signer)) is not None:
        return problems + [f"{PACKAGE_FILE}: signer: {problem}"]
    try:
        recovered = eas.recover_signer(attestation)
    except Exception:  # noqa: BLE001 - the attestation's own problems say why
        recovered = None
    if recovered is not None and signer != recovered:
        problems.append(f"{PACKAGE_FILE}: signer {signer} is not the attester: the signature recovers to {recovered}")
    if expected_signer is not None and signer != expected_signer:
        problems.append(f"{PACKAGE_FILE}: signer {signer} is not the expected attester {expected_signer}")
    return problems


def _address_problems(attestation: Mapping[str, Any]) -> list[str]:
    """Our bundles spell every address checksummed. The signature and uid hash an address's bytes, not
    its spelling, so without this a re-cased address (manifest re-hashed) would verify: two byte
    strings for one attestation."""
    domain, message = attestation.get("domain"), attestation.get("message")
    found = {"domain.verifyingContract": domain.get("verifyingContract") if isinstance(domain, Mapping) else None,
             "message.recipient": message.get("recipient") if isinstance(message, Mapping) else None}
    return [f"attestation: {field}: {problem}" for field, value in found.items() if (problem := address_problem(value))]


def _guarded(what: str, check: Any, *args: Any) -> list[str]:
    try:
        return check(*args)
    except Exception as exc:  # noqa: BLE001 - a malformed file is a failed check, not a crash
        return [f"{what}: cannot be checked ({type(exc).__name__}: {exc})"]


def _hex(value: Any) -> str:
    return "0x" + value.hex() if isinstance(value, (bytes, bytearray)) else str(value).lower()


def _check_trees(docs: Mapping[str, Any], data: dict[str, Any]) -> list[str]:
    problems = []
    trees = {}
    for name, field, encoding in (("eval_tree.json", "evalRoot", EVAL_LEAF), ("data_tree.json", "dataRoot", DATA_LEAF), ("rewards_tree.json", "rewardsRoot", REWARD_LEAF)):
        if name not in docs:
            continue  # not valid JSON, already reported
        try:
            dump = docs[name]
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
        values = [v["value"] for v in docs["rewards_tree.json"]["values"]]
        problems += [f"rewards_tree.json: leaf {i}: {p}" for i, (account, _) in enumerate(values) if (p := contributor_problem(account))]
        weights = [int(weight) for _, weight in values]
        if sum(weights) != 1_000_000:
            problems.append(f"rewards: weights sum to {sum(weights)}, not 1000000")
        if len(weights) != data["contributorCount"]:
            problems.append("contributorCount: does not match the rewards tree")
    return problems


def _evaluation_params(docs: Mapping[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    """The bootstrap parameters, if they are exactly the documented ones and in range."""
    if "evaluation.json" not in docs:
        return None, []  # not valid JSON, already reported
    params = docs["evaluation.json"]
    if not isinstance(params, dict) or set(params) != EVALUATION_KEYS:
        return None, [f"evaluation.json: must hold exactly {', '.join(sorted(EVALUATION_KEYS))}"]
    problems = []
    if params["schema"] != SCHEMA:
        problems.append("evaluation.json: schema is not the attestation schema")
    ints = all(isinstance(params[k], int) and not isinstance(params[k], bool) for k in ("seed", "resamples", "confidence_pct"))
    if not ints or not 1 <= params["resamples"] <= MAX_RESAMPLES or not 1 <= params["confidence_pct"] <= 99 or params["seed"] < 0:
        return None, problems + [f"evaluation.json: seed, resamples (1..{MAX_RESAMPLES:,}, MAX_RESAMPLES) and confidence_pct (1..99) must be integers in range"]
    return params, problems


def _check_arithmetic(docs: Mapping[str, Any], data: dict[str, Any]) -> list[str]:
    if "eval_tree.json" not in docs:
        return ["arithmetic: cannot be checked without a readable eval_tree.json"]
    leaves = [(int(v["value"][1]), int(v["value"][2])) for v in docs["eval_tree.json"]["values"]]
    qb, qc = [b for b, _ in leaves], [c for _, c in leaves]
    b, c, n = sum(qb), sum(qc), len(leaves)
    checks = {"evalCount": n, "baselineScore": b, "candidateScore": c, "deltaPpm": delta_ppm(b, c, n)}
    params, problems = _evaluation_params(docs)
    if params is not None:
        checks["ciLowPpm"] = bootstrap_ci(qb, qc, params["seed"], params["resamples"], params["confidence_pct"])[0]
    for field, expected in checks.items():
        if data[field] != expected:
            problems.append(f"{field}: attested {data[field]}, recomputed {expected}")
    if not is_deltaone(b, c, n):
        problems.append("deltaone: the eval leaves do not meet the DeltaOne rule")
    return problems
