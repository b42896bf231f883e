"""Hostile bundles end in one FAIL line, never in a crash (issue 25, item 3).

Importing ``py_ecc`` (through eth-account) raised the recursion limit to 100,000, and the C JSON
parser then overflowed the C stack: a bundle file holding a 100,000-deep array killed
``teleprompt verify`` with SIGSEGV (139), offline or not. Without ``--offline`` a malformed
``attestation.json`` was read before any guard and ended in a traceback. A 100 MB rewards tree was
parsed whole (50 s, +2.4 GB) before its leaf bound refused it. The CLI cases run the real
``teleprompt`` in its own process: only there does a segfault show as one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from teleprompt_assets.attest import bundles
from teleprompt_assets_tests.attest.test_bundles import EVIDENCE, KEY, SIGNER

TELEPROMPT = str(Path(sys.executable).with_name("teleprompt"))
DEEP = b"[" * 100_000 + b"]" * 100_000  # 200 KB


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bundles.write_bundle(bundles.build_bundle(EVIDENCE, KEY), tmp_path_factory.mktemp("hostile") / "bundle")


def _copy_with(bundle: Path, dest: Path, name: str, body: bytes, rehash: bool = True) -> Path:
    """A copy of ``bundle`` with ``name`` replaced by ``body`` (and the manifest re-hashed, as a forger would)."""
    copy = dest / f"copy-{name}"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(bundle, copy)
    (copy / name).write_bytes(body)
    if rehash and name != bundles.MANIFEST_FILE:
        manifest = json.loads((copy / bundles.MANIFEST_FILE).read_text())
        manifest[name] = hashlib.sha256(body).hexdigest()
        (copy / bundles.MANIFEST_FILE).write_text(json.dumps(manifest, sort_keys=True, indent=2))
    return copy


def _verify_cli(folder: Path, home: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TELEPROMPT_", "DAGSTER_"))}
    env |= {"TELEPROMPT_HOME": str(home), "TELEPROMPT_CONFIG": str(Path(__file__).resolve().parents[2] / "teleprompt.yaml")}
    return subprocess.run([TELEPROMPT, "verify", str(folder), "--signer", SIGNER, *extra], env=env, capture_output=True, text=True, timeout=120)


def _one_fail_line(done: subprocess.CompletedProcess, *names: str) -> str:
    """The run exited 1 (not killed by a signal) with exactly one FAIL line, naming ``names``, and no traceback."""
    assert done.returncode not in (-signal.SIGSEGV, 128 + signal.SIGSEGV), "teleprompt verify crashed (SIGSEGV)"
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-2000:]
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr[-2000:])
    lines = [line for line in done.stdout.splitlines() if line.startswith("FAIL ")]
    assert len(lines) == 1, done.stdout
    assert all(name in lines[0] for name in names), lines
    return lines[0]


@pytest.mark.e2e  # a teleprompt process per case
@pytest.mark.parametrize("offline", [True, False], ids=["offline", "against the registry"])
@pytest.mark.parametrize("name", ["attestation.json", "eval_tree.json", "offchain_package.json", "manifest.json"])
def test_a_100000_deep_file_is_one_fail_line_not_a_segfault(bundle, tmp_path, name, offline):
    copy = _copy_with(bundle, tmp_path, name, DEEP)
    line = _one_fail_line(_verify_cli(copy, tmp_path / "tp", *(["--offline"] if offline else [])), name, "nested deeper than")
    assert line.endswith("not checked further")


@pytest.mark.e2e
@pytest.mark.parametrize(("case", "names"), [
    ("a list", ["attestation.json", "not a JSON object"]),
    ("a short data field", ["attestation", "data"]),
    ("data of the wrong type", ["attestation", "data"]),
    ("a message of the wrong type", ["attestation", "message"]),
    ("schema and data of the wrong types", ["attestation", "decode"]),
])
def test_a_malformed_attestation_against_the_registry_fails_without_a_traceback(bundle, tmp_path, case, names):
    """Without ``--offline`` the attestation was read (to look up its model version) before any guard:
    ``[]`` and a short ``data`` ended in a traceback. It is now read behind the verifier's guards, and
    what cannot be decoded is left to the bundle check."""
    attestation = json.loads((bundle / "attestation.json").read_text())
    message = attestation["message"]
    body = {
        "a list": [],
        "a short data field": attestation | {"message": message | {"data": message["data"][:40]}},
        "data of the wrong type": attestation | {"message": message | {"data": 5}},
        "a message of the wrong type": attestation | {"message": "x"},
        "schema and data of the wrong types": attestation | {"message": message | {"data": None, "schema": [1]}},
    }[case]
    done = _verify_cli(_copy_with(bundle, tmp_path, "attestation.json", json.dumps(body).encode()), tmp_path / "tp")
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr, (done.returncode, done.stderr[-2000:])
    fails = [line for line in done.stdout.splitlines() if line.startswith("FAIL ")]
    assert fails and not done.stderr.strip(), (done.stdout, done.stderr)
    assert any(all(n in line for n in names) for line in fails), fails
    if case == "a list":
        assert len(fails) == 1, fails


def test_an_untrusted_parse_stays_safe_after_eth_account_is_imported():
    """The package undoes py_ecc's limit; a process that imported eth-account first keeps py_ecc's
    limit, and the verifier is safe there too, because it bounds depth before parsing."""
    script = (
        "import json, sys\n"
        "import teleprompt_assets, eth_account\n"
        "from teleprompt_assets.attest import bundles\n"
        "print(sys.getrecursionlimit())\n"
        "try:\n"
        "    json.loads('[' * 100000 + ']' * 100000)\n"
        "except RecursionError:\n"
        "    print('RecursionError')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["1000", "RecursionError"], (done.returncode, done.stdout, done.stderr[-2000:])
    first = "import eth_account, sys; from teleprompt_assets.core.encoding import loads_bounded\n" \
            "print(sys.getrecursionlimit())\n" \
            "try:\n    loads_bounded('[' * 100000 + ']' * 100000)\nexcept ValueError as exc:\n    print(type(exc).__name__)\n"
    done = subprocess.run([sys.executable, "-c", first], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["100000", "JsonTooDeep"], (done.returncode, done.stdout, done.stderr[-2000:])


def test_a_100_mb_rewards_tree_is_refused_by_its_size_before_it_is_read(bundle, tmp_path):
    """It was parsed whole (50 s, +2.4 GB) before the leaf bound refused it. The rewards tree's byte
    bound now follows from MAX_REWARD_LEAVES: fstat refuses it, nothing is read."""
    copy = _copy_with(bundle, tmp_path, "rewards_tree.json", b"", rehash=False)
    with open(copy / "rewards_tree.json", "wb") as sparse:
        sparse.truncate(100_000_000)
    tracemalloc.start()
    started = time.perf_counter()
    problems = bundles.verify_bundle(copy, SIGNER)
    elapsed, (_, peak) = time.perf_counter() - started, tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert problems == [f"rewards_tree.json: 100,000,000 bytes, over its limit of {bundles.MAX_FILE_BYTES['rewards_tree.json']:,} (MAX_FILE_BYTES)"]
    assert elapsed < 5 and peak < 20_000_000, (elapsed, peak)


@pytest.mark.parametrize("name", bundles.TREE_FILES)
def test_each_tree_file_bound_follows_from_its_leaf_bound(name):
    limit = bundles.leaf_limit(name)
    assert bundles.MAX_FILE_BYTES[name] == limit * bundles.BYTES_PER_LEAF[name] + bundles.DUMP_OVERHEAD_BYTES
    assert bundles.MAX_FILE_BYTES["rewards_tree.json"] < 100_000_000


@pytest.mark.parametrize(("name", "leaf"), [
    ("data_tree.json", lambda i: ["0x" + f"{i:064x}"]),
    ("eval_tree.json", lambda i: ["0x" + f"{i:064x}", 1_000_000, 1_000_000]),
    ("rewards_tree.json", lambda i: ["0x" + f"{i + 2**150:040x}", 1_000_000]),
])
def test_a_real_dump_fits_its_bytes_per_leaf(name, leaf):
    """The bound is no tighter than what build_bundle writes: amounts at their largest, tree indexes
    two digits short of the largest (1,999,999), which leaves the 2 bytes a leaf the bound keeps."""
    from eth_utils import to_checksum_address

    from teleprompt_assets.attest.merkle import StandardMerkleTree

    encoding = {"data_tree.json": bundles.DATA_LEAF, "eval_tree.json": bundles.EVAL_LEAF, "rewards_tree.json": bundles.REWARD_LEAF}[name]
    values = [leaf(i) for i in range(20_000)]
    if name == "rewards_tree.json":
        values = [[to_checksum_address(v[0]), v[1]] for v in values]
    body = bundles._json_bytes(StandardMerkleTree.of(values, encoding).dump())
    assert len(body) / len(values) + 4 <= bundles.BYTES_PER_LEAF[name], len(body) / len(values)


def test_a_tree_of_empty_arrays_is_refused_before_it_is_parsed(bundle, tmp_path):
    """A file of ``[],`` costs ~24 bytes of memory a byte once parsed: more objects and arrays than
    the leaf bound allows are refused by counting them, before the parser runs."""
    limit = bundles.leaf_limit("data_tree.json")
    body = b"[" + b"[]," * (bundles.CONTAINERS_PER_LEAF * limit + 16) + b"[]]"
    assert len(body) < bundles.MAX_FILE_BYTES["data_tree.json"]
    problems = bundles.verify_bundle(_copy_with(bundle, tmp_path, "data_tree.json", body), SIGNER)
    assert len(problems) == 1 and problems[0].startswith("data_tree.json: not valid JSON (") and "MAX_TREE_LEAVES" in problems[0], problems


def test_submit_reads_the_attestation_behind_the_same_guards(bundle, tmp_path):
    from teleprompt_assets.attest import onchain

    deep = _copy_with(bundle, tmp_path, "attestation.json", DEEP)
    with pytest.raises(onchain.OnchainError, match="attestation.json: not valid JSON .*nested deeper"):
        onchain._read_attestation(deep, SIGNER)
    (linked := _copy_with(bundle, tmp_path, "evaluation.json", b"{}")).joinpath("attestation.json").unlink()
    linked.joinpath("attestation.json").symlink_to(bundle / "attestation.json")
    with pytest.raises(onchain.OnchainError, match="symlink"):
        onchain._read_attestation(linked, SIGNER)


def test_a_share_string_that_inflates_past_its_bound_is_refused():
    import base64
    import zlib

    from teleprompt_assets.attest.share import MAX_SHARE_BYTES, decode_share_string

    bomb = base64.b64encode(zlib.compress(b"[" * (MAX_SHARE_BYTES * 4), 9)).decode()
    with pytest.raises(ValueError, match="inflates past"):
        decode_share_string(bomb)
    with pytest.raises(ValueError, match="nested deeper"):
        decode_share_string(base64.b64encode(zlib.compress(DEEP, 9)).decode())


def test_the_byte_and_leaf_bounds_are_documented_as_they_are():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "attestations.md").read_text()
    for name in ("MAX_EVAL_LEAVES", "MAX_REWARD_LEAVES", "BYTES_PER_LEAF"):
        assert name in doc, name
    for value in (bundles.MAX_EVAL_LEAVES, bundles.MAX_REWARD_LEAVES, *(bundles.MAX_FILE_BYTES[n] for n in bundles.TREE_FILES)):
        assert f"{value:,}" in doc, value
    assert all(f"{bundles.BYTES_PER_LEAF[n]} {n.split('_')[0]}" in doc for n in bundles.TREE_FILES)
