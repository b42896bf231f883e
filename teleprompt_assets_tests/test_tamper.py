"""Tampering (issue 8): 1,000 seeded random one-value mutations of a real bundle; none verifies.

The bundle is built by the project's own ``build_bundle`` from a real ``ticket_router`` program
state (demos drawn from the sample traffic) and realistic eval, data and reward leaves. Each
mutation changes exactly one value somewhere in it:

- any value of ``attestation.json`` (domain, message fields, uid, types, versions), half of the
  message mutations with the uid recomputed as a careful forger would;
- the signature's ``v``, ``r`` or ``s``;
- one field of the ABI-decoded ``data``, re-encoded (uid recomputed half the time);
- one field of ``data`` re-encoded and the whole attestation re-signed by another key;
- any value of the three tree dumps (format, leaf encoding, node, leaf value, amount, index);
- any value of ``program.json`` or ``evaluation.json``;
- any value of ``offchain_package.json`` (the EAS SDK's ``{sig, signer}``; half of them the signer);
- any entry of ``manifest.json``.

Every mutation of a file other than the manifest is followed by re-hashing the manifest, so the
manifest check is never what catches it: the signature, uid, salt, roots, arithmetic or program
hash must. ``verify_bundle`` must reject every one, and never raise.

Speed (it runs in ``make test``): the bundle is small (16 holdout leaves, 100 bootstrap resamples,
both recorded in it), files are rewritten in a RAM-backed folder where there is one, and the
verifier's three costly pure functions are memoized per distinct input (see ``memoized``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import string
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import dspy
import pytest
from eth_account import Account
from eth_utils import keccak, to_checksum_address

from teleprompt_assets.attest import eas
from teleprompt_assets.attest.bundles import FILES, PACKAGE_FILE, SCHEMA, Evidence, build_bundle, default_domain, verify_bundle
from teleprompt_assets.core.encoding import canonical_bytes
from teleprompt_assets.core.spec import load_project
from teleprompt_assets.optimize.teleprompters import program_state
from teleprompt_assets.samples.ticket_traffic import tickets
from teleprompt_assets_tests.conftest import REPO
from teleprompt_assets_tests.reliability import fast_tmp  # noqa: F401 - fixture

MUTATIONS = 1_000
SEED = 20_261_120
KEY = bytes.fromhex("8f2a55949038a9610f50fb23b5883af3b4ecb3c3bb792cbcefbd1542c692be63")
SIGNER = Account.from_key(KEY).address
FORGER_KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3b362318")
HEX = "0123456789abcdef"
CATEGORIES = ("attestation", "signature", "data", "resigned", "eval_tree", "data_tree", "rewards_tree", "program", "evaluation", "package", "manifest")
TREE_FILES = {"eval_tree": "eval_tree.json", "data_tree": "data_tree.json", "rewards_tree": "rewards_tree.json"}


def _h(text: str) -> str:
    return "0x" + keccak(text=text).hex()


@pytest.fixture(scope="module")
def evidence() -> Evidence:
    """A real compiled-program state and leaves shaped like a pipeline run's."""
    spec = load_project(REPO / "teleprompt.yaml")[1]["ticket_router"]
    rng = random.Random(7)
    sample = list(tickets(12, rng))
    program = spec.build()
    program.route.demos = [
        dspy.Example(message=t.message, queue=t.true_queue, trace_id=f"tr-{i}", trace_hash=_h(f"trace {i}"), contributor=t.contributor.address)
        for i, t in enumerate(sample[:4])
    ]
    contributors = sorted({t.contributor.address for t in sample})
    weights = [1_000_000 // len(contributors)] * len(contributors)
    weights[0] += 1_000_000 - sum(weights)
    return Evidence(
        program="ticket_router", model_version=4, baseline_version=3, program_state=program_state(program),
        eval_leaves=[(_h(f"example {i}"), 10**6 if i % 8 < 3 else 0, 10**6 if i % 8 < 7 else 0) for i in range(16)],
        data_leaves=[_h(f"trace {i}") for i in range(12)],
        reward_leaves=list(zip(contributors, weights)),
        seed=20_240_101, resamples=100, confidence_pct=95, time=1_795_219_200,
        ref_uid=_h("previous attestation"),
    )


@pytest.fixture(scope="module")
def files(evidence: Evidence) -> dict[str, bytes]:
    return build_bundle(evidence, KEY)


def _json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, indent=2).encode("utf-8")


def _leaves(node: Any, path: tuple = ()) -> list[tuple]:
    if isinstance(node, dict):
        return [p for key in sorted(node) for p in _leaves(node[key], (*path, key))]
    if isinstance(node, list):
        return [p for i, item in enumerate(node) for p in _leaves(item, (*path, i))]
    return [path]


def _get(doc: Any, path: tuple) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def _set(doc: Any, path: tuple, value: Any) -> None:
    _get(doc, path[:-1])[path[-1]] = value


def _other_char(char: str, rng: random.Random) -> str:
    """A character that means something else: another hex digit (case kept) or another letter."""
    if char.lower() in HEX:
        new = rng.choice([h for h in HEX if h != char.lower()])
        return new.upper() if char.isupper() else new
    return rng.choice([c for c in string.ascii_letters + string.digits + " .,:" if c != char])


def _mutate_value(value: Any, rng: random.Random) -> Any:
    """A different value of the same kind (a different number, hex digit, character...)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + rng.choice((-1, 1)) * rng.randint(1, 3)
    if value is None:
        return rng.choice(("x", 0, False))
    if isinstance(value, float):
        return value + rng.choice((-0.5, 0.5))
    if isinstance(value, bytes):
        i = rng.randrange(len(value))
        return value[:i] + bytes([value[i] ^ rng.randint(1, 255)]) + value[i + 1 :]
    text = str(value)
    if text.isdigit():
        return str(int(text) + rng.randint(1, 3))
    if text.startswith("0x") and len(text) > 2:
        i = rng.randrange(2, len(text))
        return text[:i] + _other_char(text[i], rng) + text[i + 1 :]
    if not text:
        return rng.choice(string.ascii_letters)
    i = rng.randrange(len(text))
    op = rng.choice(("replace", "insert", "delete"))
    if op == "insert":
        return text[:i] + rng.choice(string.ascii_letters) + text[i:]
    if op == "delete" and len(text) > 1:
        return text[:i] + text[i + 1 :]
    return text[:i] + _other_char(text[i], rng) + text[i + 1 :]


def _mutate_data_field(data_hex: str, rng: random.Random) -> tuple[str, str]:
    """Decode ``message.data`` with the schema, change one field, encode it again."""
    fields = eas.parse_schema(SCHEMA)
    values = eas.decode_data(SCHEMA, data_hex)
    abi_type, name = rng.choice(fields)
    old = values[name]
    new = _mutate_value(old, rng)
    if abi_type.startswith("uint"):
        new = abs(new) % (1 << int(abi_type[4:]))
        if new == old:
            new = (old + 1) % (1 << int(abi_type[4:]))
    values[name] = new
    return "0x" + eas.encode_data(SCHEMA, values).hex(), name


def _recompute_uid(attestation: dict) -> None:
    message = attestation["message"]
    try:
        attestation["uid"] = eas.offchain_uid(
            schema=message["schema"], recipient=message["recipient"], time=int(message["time"]), expiration_time=int(message["expirationTime"]),
            revocable=message["revocable"], ref_uid=message["refUID"], data=message["data"], salt=message["salt"],
        )
    except (ValueError, TypeError, KeyError):
        pass  # the forger cannot recompute it either; the mutated value alone must be caught


def _resign(attestation: dict, rng: random.Random) -> str:
    """Change one data field and sign the whole attestation again with another key."""
    message = attestation["message"]
    data, field = _mutate_data_field(message["data"], rng)
    signed = eas.sign_offchain(
        FORGER_KEY, default_domain(), schema=message["schema"], recipient=message["recipient"], time=int(message["time"]),
        expiration_time=int(message["expirationTime"]), revocable=message["revocable"], ref_uid=message["refUID"],
        data=bytes.fromhex(data[2:]), salt=bytes.fromhex(message["salt"][2:]),
    )
    attestation.clear()
    attestation.update(json.loads(_json(signed)))
    return field


def mutate(files: dict[str, bytes], rng: random.Random) -> tuple[dict[str, bytes], str]:
    """One random one-value change; returns the new files and a label naming what changed."""
    out = dict(files)
    category = rng.choice(CATEGORIES)
    if category in ("attestation", "signature", "data", "resigned"):
        attestation = json.loads(files["attestation.json"])
        if category == "attestation":
            path = rng.choice([p for p in _leaves(attestation) if p[0] != "signature" and p != ("message", "data")])
            _set(attestation, path, _mutate_value(_get(attestation, path), rng))
            label = ".".join(map(str, path))
            if path[0] == "message" and rng.random() < 0.5:
                _recompute_uid(attestation)
                label += " +uid"
        elif category == "signature":
            path = rng.choice(_leaves(attestation["signature"]))
            _set(attestation["signature"], path, _mutate_value(_get(attestation["signature"], path), rng))
            label = f"signature.{path[0]}"
        elif category == "data":
            attestation["message"]["data"], label = _mutate_data_field(attestation["message"]["data"], rng)
            if rng.random() < 0.5:
                _recompute_uid(attestation)
                label += " +uid"
        else:
            label = _resign(attestation, rng)
        out["attestation.json"] = _json(attestation)
    elif category in TREE_FILES or category == "evaluation":
        name = TREE_FILES.get(category, "evaluation.json")
        doc = json.loads(files[name])
        path = rng.choice(_leaves(doc))
        _set(doc, path, _mutate_value(_get(doc, path), rng))
        out[name] = _json(doc)
        label = ".".join(map(str, path))
    elif category == "program":
        state = json.loads(files["program.json"])
        path = rng.choice(_leaves(state))
        _set(state, path, _mutate_value(_get(state, path), rng))
        out["program.json"] = canonical_bytes(state)
        label = ".".join(map(str, path))
    elif category == "package":
        package = json.loads(files[PACKAGE_FILE])
        path = ("signer",) if rng.random() < 0.5 else ("sig", *rng.choice(_leaves(package["sig"])))
        _set(package, path, _mutate_value(_get(package, path), rng))
        out[PACKAGE_FILE] = _json(package)
        label = ".".join(map(str, path))
    else:
        manifest = json.loads(files["manifest.json"])
        name = rng.choice(sorted(manifest))
        manifest[name] = _mutate_value(manifest[name], rng)
        out["manifest.json"] = _json(manifest)
        return out, f"manifest:{name}"
    out["manifest.json"] = _json({name: hashlib.sha256(out[name]).hexdigest() for name in FILES})  # re-hashed: deeper checks must catch it
    return out, f"{category}:{label}"


def _write(files: dict[str, bytes], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        (folder / name).write_bytes(body)
    return folder


@pytest.fixture
def memoized(monkeypatch: pytest.MonkeyPatch) -> None:
    """The verifier's three costly steps are pure functions of their input; a mutation changes the
    input of at most one of them, so each is computed once per distinct input instead of 1,000
    times: signature recovery (per attestation), the bootstrap (per eval leaves and parameters) and
    tree loading (per dump). Every decision verify_bundle makes is unchanged."""
    import teleprompt_assets.attest.bundles as attest_module
    from teleprompt_assets.attest.merkle import StandardMerkleTree

    def memo(function, key):
        seen = {}

        def wrapper(*args):
            k = key(*args)
            if k not in seen:
                try:
                    seen[k] = (True, function(*args))
                except Exception as exc:  # noqa: BLE001 - a failure is a result too
                    seen[k] = (False, exc)
            ok, value = seen[k]
            if not ok:
                raise value
            return value

        return wrapper

    monkeypatch.setattr(eas, "recover_signer", memo(eas.recover_signer, lambda a: json.dumps(a, sort_keys=True)))
    monkeypatch.setattr(attest_module, "bootstrap_ci", memo(attest_module.bootstrap_ci, lambda *args: repr(args)))
    load = StandardMerkleTree.load.__func__
    monkeypatch.setattr(StandardMerkleTree, "load", classmethod(memo(load, lambda cls, dump: json.dumps(dump, sort_keys=True))))


def test_the_unmutated_bundle_verifies(files, evidence, tmp_path):
    folder = _write(files, tmp_path / "clean")
    assert verify_bundle(folder, SIGNER, registered_program_hash="0x" + keccak(canonical_bytes(evidence.program_state)).hex()) == []
    assert to_checksum_address(SIGNER) == SIGNER


def test_a_thousand_random_mutations_none_verifies(files, fast_tmp, memoized):
    rng = random.Random(SEED)
    folder = fast_tmp / "mutated"
    categories: Counter[str] = Counter()
    locations: set[str] = set()
    accepted, crashed = [], []
    for i in range(MUTATIONS):
        mutated, label = mutate(files, rng)
        assert mutated != files, label
        _write(mutated, folder)
        categories[label.split(":")[0]] += 1
        locations.add(label.split(" ")[0])
        try:
            problems = verify_bundle(folder, SIGNER)
        except Exception as exc:  # noqa: BLE001 - a crash is a rejection, but verify must report, not raise
            crashed.append(f"#{i} {label}: {type(exc).__name__}: {exc}")
            continue
        if not problems:
            accepted.append(f"#{i} {label}")
    assert not accepted, f"{len(accepted)} of {MUTATIONS} mutated bundles still verify: {accepted[:20]}"
    assert not crashed, f"verify_bundle raised instead of reporting on {len(crashed)} bundles: {crashed[:10]}"
    assert set(categories) == set(CATEGORIES) and min(categories.values()) >= 60, categories
    assert len(locations) >= 150, f"only {len(locations)} distinct places mutated"


# --- hostile bundles (issue 14 item 8): the verifier reads only the bundle's own files, bounded --------

OUTSIDE_ENTRY = "../../../../etc/hostname"
_OPEN_LOGS: list[list[str]] = []
_AUDITING = False


@pytest.fixture
def opened() -> Any:
    """Paths opened from here on (the interpreter's ``open`` audit events); clear it before the call watched."""
    global _AUDITING
    if not _AUDITING:
        sys.addaudithook(_record_open)
        _AUDITING = True
    log: list[str] = []
    _OPEN_LOGS.append(log)
    yield log
    _OPEN_LOGS.remove(log)


def _record_open(event: str, args: tuple) -> None:
    if event == "open" and _OPEN_LOGS and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPEN_LOGS[-1].append(os.fsdecode(args[0]))


@pytest.fixture
def expensive(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the verifier's costly steps as they run: signature recovery, tree loading, bootstrap."""
    import teleprompt_assets.attest.bundles as attest_module
    from teleprompt_assets.attest.merkle import StandardMerkleTree

    calls: list[str] = []

    def counted(name: str, function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(eas, "recover_signer", counted("recover_signer", eas.recover_signer))
    monkeypatch.setattr(attest_module, "bootstrap_ci", counted("bootstrap_ci", attest_module.bootstrap_ci))
    load = StandardMerkleTree.load.__func__
    monkeypatch.setattr(StandardMerkleTree, "load", classmethod(counted("tree load", load)))
    return calls


def _with_manifest(files: dict[str, bytes], change: Any) -> dict[str, bytes]:
    manifest = json.loads(files["manifest.json"])
    change(manifest)
    return {**files, "manifest.json": _json(manifest)}


def test_a_manifest_entry_outside_the_bundle_fails_and_is_never_read(files, tmp_path, opened):
    """The issue's case: ``../../../../etc/hostname`` with the sha256 of the very file it names."""
    folder = tmp_path / "w" / "x" / "y" / "bundle"
    target = tmp_path / "etc" / "hostname"
    target.parent.mkdir()
    target.write_bytes(b"victim\n")
    assert (folder / OUTSIDE_ENTRY).resolve() == target.resolve()
    _write(_with_manifest(files, lambda m: m.__setitem__(OUTSIDE_ENTRY, hashlib.sha256(target.read_bytes()).hexdigest())), folder)
    opened.clear()
    problems = verify_bundle(folder, SIGNER)
    assert any(OUTSIDE_ENTRY in p for p in problems), problems
    assert not [p for p in opened if p.endswith("hostname")], opened


@pytest.mark.parametrize("entry", ["/etc/hostname", "sub/eval_tree.json", "./eval_tree.json", "eval_tree.json/", "..", "notes.txt", "Eval_tree.json", "manifest.json"])
def test_a_manifest_entry_that_is_not_exactly_a_bundle_file_fails_naming_it(files, tmp_path, opened, entry):
    folder = _write(files, tmp_path / "bundle")
    (folder / "sub").mkdir()
    (folder / "sub" / "eval_tree.json").write_bytes(files["eval_tree.json"])
    (folder / "notes.txt").write_bytes(b"notes\n")
    digest = hashlib.sha256(files.get(entry.strip("./").removeprefix("sub/"), b"notes\n")).hexdigest()
    _write(_with_manifest(files, lambda m: m.__setitem__(entry, digest)), folder)
    opened.clear()
    problems = verify_bundle(folder, SIGNER)
    assert any(repr(entry) in p for p in problems), problems
    assert not [p for p in opened if p.endswith(("hostname", "notes.txt")) or "sub" in Path(p).parts], opened


def test_a_bundle_file_missing_from_the_manifest_fails(files, tmp_path):
    def move(manifest: dict) -> None:
        manifest["./program.json"] = manifest.pop("program.json")

    problems = verify_bundle(_write(_with_manifest(files, move), tmp_path / "bundle"), SIGNER)
    assert any("program.json" in p and "no entry" in p for p in problems), problems
    assert any("'./program.json'" in p for p in problems), problems


@pytest.mark.parametrize("manifest", [[], "x", {"attestation.json": 7}, {"attestation.json": "ABC"}], ids=["list", "string", "number", "not-hex"])
def test_a_manifest_of_the_wrong_shape_fails(files, tmp_path, manifest):
    if isinstance(manifest, dict):
        manifest = {**json.loads(files["manifest.json"]), **manifest}
    assert verify_bundle(_write({**files, "manifest.json": _json(manifest)}, tmp_path / "bundle"), SIGNER)


@pytest.mark.parametrize("name", ["attestation.json", "offchain_package.json", "eval_tree.json", "manifest.json"])
@pytest.mark.parametrize("where", ["outside", "inside"])
def test_a_bundle_file_that_is_a_symlink_is_refused(files, tmp_path, name, where):
    """Even one pointing at identical bytes: a link is never read through."""
    folder = _write(files, tmp_path / "bundle")
    target = tmp_path / "elsewhere" if where == "outside" else folder / "copy"
    target.write_bytes((folder / name).read_bytes())
    (folder / name).unlink()
    (folder / name).symlink_to(target)
    problems = verify_bundle(folder, SIGNER)
    assert any(name in p and "symlink" in p for p in problems), problems


def test_a_bundle_file_that_is_a_fifo_or_a_folder_is_refused_without_blocking(files, tmp_path):
    import threading

    folder = _write(files, tmp_path / "bundle")
    (folder / "program.json").unlink()
    os.mkfifo(folder / "program.json")
    (folder / "data_tree.json").unlink()
    (folder / "data_tree.json").mkdir()
    result: list[list[str]] = []
    worker = threading.Thread(target=lambda: result.append(verify_bundle(folder, SIGNER)), daemon=True)
    worker.start()
    worker.join(30)
    assert result, "verify_bundle blocked on a FIFO in the bundle"
    assert any("program.json" in p and "regular file" in p for p in result[0]), result[0]
    assert any("data_tree.json" in p and "regular file" in p for p in result[0]), result[0]


def test_a_file_over_its_size_limit_is_refused_before_any_work(files, tmp_path, monkeypatch, expensive):
    import teleprompt_assets.attest.bundles as attest_module

    folder = _write(files, tmp_path / "bundle")
    monkeypatch.setitem(attest_module.MAX_FILE_BYTES, "program.json", len(files["program.json"]) - 1)
    problems = verify_bundle(folder, SIGNER)
    assert any("program.json" in p and f"{len(files['program.json']) - 1:,}" in p for p in problems), problems
    assert expensive == []
    monkeypatch.setitem(attest_module.MAX_FILE_BYTES, "program.json", len(files["program.json"]))
    assert verify_bundle(folder, SIGNER) == []


def test_eval_leaves_times_resamples_over_the_limit_is_refused_before_any_work(files, evidence, tmp_path, monkeypatch, expensive):
    """16 leaves × 100 resamples = 1,600 bootstrap draws: one under that limit refuses, at it verifies."""
    import teleprompt_assets.attest.bundles as attest_module

    folder = _write(files, tmp_path / "bundle")
    draws = len(evidence.eval_leaves) * evidence.resamples
    monkeypatch.setattr(attest_module, "MAX_BOOTSTRAP_DRAWS", draws - 1)
    problems = verify_bundle(folder, SIGNER)
    assert any("resamples" in p and f"{draws:,}" in p and f"{draws - 1:,}" in p for p in problems), problems
    assert expensive == []
    monkeypatch.setattr(attest_module, "MAX_BOOTSTRAP_DRAWS", draws)
    assert verify_bundle(folder, SIGNER) == []
    assert "bootstrap_ci" in expensive


def test_a_tree_over_the_leaf_limit_is_refused_before_any_work(files, tmp_path, monkeypatch, expensive):
    import teleprompt_assets.attest.bundles as attest_module

    folder = _write(files, tmp_path / "bundle")
    monkeypatch.setattr(attest_module, "MAX_TREE_LEAVES", 11)  # the data tree has 12 leaves, the eval tree 16
    problems = verify_bundle(folder, SIGNER)
    assert any(p.startswith("data_tree.json") and "12" in p and "11" in p for p in problems), problems
    assert any(p.startswith("eval_tree.json") and "16" in p for p in problems), problems
    assert not any(p.startswith("rewards_tree.json") for p in problems), problems
    assert expensive == []


def test_a_hostile_tree_claiming_more_nodes_than_leaves_allow_is_refused_before_any_work(files, tmp_path, monkeypatch, expensive):
    import teleprompt_assets.attest.bundles as attest_module

    dump = json.loads(files["data_tree.json"])
    dump["tree"] = dump["tree"] * 4
    folder = _write({**files, "data_tree.json": _json(dump)}, tmp_path / "bundle")
    monkeypatch.setattr(attest_module, "MAX_TREE_LEAVES", 12)
    problems = verify_bundle(folder, SIGNER)
    assert any(p.startswith("data_tree.json") and "nodes" in p for p in problems), problems
    assert expensive == []


def test_build_bundle_refuses_evidence_the_verifier_would_refuse(evidence, monkeypatch):
    import teleprompt_assets.attest.bundles as attest_module

    monkeypatch.setattr(attest_module, "MAX_BOOTSTRAP_DRAWS", len(evidence.eval_leaves) * evidence.resamples - 1)
    with pytest.raises(ValueError, match="MAX_BOOTSTRAP_DRAWS"):
        build_bundle(evidence, KEY)
    monkeypatch.undo()
    monkeypatch.setattr(attest_module, "MAX_TREE_LEAVES", len(evidence.data_leaves) - 1)
    with pytest.raises(ValueError, match="MAX_TREE_LEAVES"):
        build_bundle(evidence, KEY)


def test_the_limits_are_documented():
    import teleprompt_assets.attest.bundles as attest_module

    doc = (REPO / "docs" / "attestations.md").read_text()
    for name in ("MAX_TREE_LEAVES", "MAX_BOOTSTRAP_DRAWS", "MAX_RESAMPLES", "MAX_FILE_BYTES"):
        assert name in doc, name
    for value in (attest_module.MAX_TREE_LEAVES, attest_module.MAX_BOOTSTRAP_DRAWS, attest_module.MAX_RESAMPLES):
        assert f"{value:,}" in doc, value
