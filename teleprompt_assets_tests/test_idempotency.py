"""Idempotency (issue 8): the same partition run three times gives byte-identical program JSON,
Merkle roots and attestation, exactly one model version and exactly one attestation."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import dagster as dg
import pytest

from teleprompt_assets.attest import eas
from teleprompt_assets.attest.bundles import SCHEMA
from teleprompt_assets.core.encoding import canonical_bytes
from teleprompt_assets.core.settings import load_settings
from teleprompt_assets.core.tracking import connect
from teleprompt_assets.register import registry
from teleprompt_assets_tests.reliability import MODEL, PROGRAM, environment, fresh_store, inspect_store, outputs, pipeline_env, run_job, scratch_root

RUNS = 3


def _bundle_bytes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def runs():
    dest = Path(tempfile.mkdtemp(prefix="tp-idem-", dir=scratch_root()))
    home = fresh_store(dest)
    seen = []
    try:
        with environment(pipeline_env(home)), dg.instance_for_test(temp_dir=str(dest / "dagster")) as instance:
            for _ in range(RUNS):
                result = run_job(instance)
                assert result.success
                out = outputs(result)
                att = out["deltaone_attestation"]
                bundle = Path(att["bundle"])
                body = json.loads((bundle / "attestation.json").read_text())
                data = eas.decode_data(SCHEMA, body["message"]["data"])
                seen.append({
                    "state": canonical_bytes(out["compiled_program"]["state"]),
                    "program_json": (bundle / "program.json").read_bytes(),
                    "roots": {k: "0x" + data[k].hex() for k in ("evalRoot", "dataRoot", "rewardsRoot", "programHash")},
                    "attestation": (bundle / "attestation.json").read_bytes(),
                    "bundle": _bundle_bytes(bundle),
                    "version": out["registered_version"], "champion": out["champion_alias"]["champion_version"], "uid": att["uid"],
                })
            settings = load_settings()
            client = connect(settings)
            store = inspect_store()
            versions = client.search_model_versions(f"name = '{MODEL}'")
            artifacts = Path(tempfile.mkdtemp(dir=dest))
            logged = registry.download_attestation(client, versions[0], artifacts)
            state_artifact = registry.load_program_state(client, versions[0])
            yield {"runs": seen, "store": store, "versions": versions, "outbox": sorted((settings.outbox / PROGRAM).iterdir()),
                   "logged": _bundle_bytes(logged), "state_artifact": canonical_bytes(state_artifact)}
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def test_three_runs_give_byte_identical_program_roots_and_attestation(runs):
    first, *rest = runs["runs"]
    for n, later in enumerate(rest, start=2):
        for key in ("state", "program_json", "roots", "attestation", "bundle", "uid"):
            assert later[key] == first[key], f"run {n} differs from run 1 in {key}"
    assert first["state"] == first["program_json"] == runs["state_artifact"]  # the registered model's JSON state too


def test_three_runs_register_one_version_and_one_attestation(runs):
    versions = runs["versions"]
    assert len(versions) == 1
    assert [r["version"]["created"] for r in runs["runs"]] == [True, False, False]
    assert {r["version"]["version"] for r in runs["runs"]} == {int(versions[0].version)}
    assert {r["champion"] for r in runs["runs"]} == {int(versions[0].version)}
    assert [p.name for p in runs["outbox"]] == [runs["runs"][0]["uid"]]
    assert versions[0].tags["attestation_uid"] == runs["runs"][0]["uid"]
    assert runs["logged"] == runs["runs"][0]["bundle"]  # the MLflow artifacts hold the same bytes as the outbox
    assert runs["store"].problems == []
