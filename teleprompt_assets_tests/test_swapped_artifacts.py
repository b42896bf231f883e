"""Only what was attested is loaded (issue 25, item 2).

One real run of the pipeline (Dagster, the offline LM) on a sqlite store seeded with five days of
``ticket_router`` traffic registers, promotes and attests a version. Then, as whoever can write the artifact store would, each test swaps
one artifact of the champion and puts it back afterwards:

- ``data/model.pkl`` for a pickle whose ``__reduce__`` creates a marker folder (the harmless stand-in
  for a command);
- ``program_state.json`` for one teaching other labels (every demo's queue moved), with and without
  the version's ``program_hash`` tag rewritten to match it;
- ``MLmodel`` pointing MLflow's loader at another file.

``teleprompt verify models:/…`` (its own process) used to print OK for all of them (it compared the
bundle with the version's tag only), and ``serving.load_champion`` unpickled ``model.pkl``. Now verify
exits 1 with one FAIL line naming the artifact, ``load_champion`` refuses naming it, and the marker
never appears: nothing is unpickled.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from eth_account import Account

from teleprompt_assets_tests.reliability import END, MODEL, PROGRAM, SIGNER, environment, pipeline_env, scratch_root

TELEPROMPT = str(Path(sys.executable).with_name("teleprompt"))
CHAMPION_URI = f"models:/{MODEL}@champion"


class _RunsCode:
    """Unpickling this creates a folder: what a hostile pickle would do instead is anyone's guess."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@dataclass
class Attested:
    home: Path
    env: dict[str, str]
    version: int
    uid: str
    bundle: Path
    pickle: Path
    state: Path
    mlmodel: Path


DAYS, PER_DAY = 5, 20  # the shared template (3 × 16) holds too few held-out examples for a confidence bound above zero


@pytest.fixture(scope="module")
def attested() -> Iterator[Attested]:
    """A store seeded with DAYS days of ticket_router traffic and the partition END run through Dagster."""
    import mlflow

    from teleprompt_assets.core.settings import load_settings
    from teleprompt_assets.core.spec import load_project
    from teleprompt_assets.definitions import build_definitions
    from teleprompt_assets.launch import run_partition
    from teleprompt_assets.samples.seed import seed_ticket_router

    dest = Path(tempfile.mkdtemp(prefix="tp-swap-", dir=scratch_root()))
    home = dest / "tp"
    (dest / "dagster").mkdir()
    env = pipeline_env(home) | {"DAGSTER_HOME": str(dest / "dagster")}
    try:
        with environment(env), pytest.MonkeyPatch.context() as patch:
            settings = load_settings()
            patch.setattr(mlflow.dspy, "autolog", lambda *args, **kwargs: None)  # root spans only, what the pipeline reads
            seed_ticket_router(settings, load_project(settings.config_path)[1][PROGRAM], END, days=DAYS, per_day=PER_DAY, seed=0)
            with dg.instance_for_test(temp_dir=str(dest / "dagster")) as instance:
                out = run_partition(build_definitions(), PROGRAM, END.isoformat(), instance)
        att, version = out["deltaone_attestation"], out["registered_version"]
        assert att.get("attested") and att["attester"] == SIGNER, f"the run attested nothing, so there is nothing to swap: {att}"
        assert out["champion_alias"]["champion_version"] == version["version"]
        artifacts = home / "artifacts" / "teleprompt-pipeline"
        [pickled] = artifacts.glob("models/*/artifacts/data/model.pkl")
        yield Attested(home, env, version["version"], att["uid"], Path(att["bundle"]), pickled,
                       artifacts / version["run_id"] / "artifacts" / "program_state.json", pickled.parent.parent / "MLmodel")
    finally:
        shutil.rmtree(dest, ignore_errors=True)


@contextmanager
def swapped(path: Path, body: bytes) -> Iterator[None]:
    original = path.read_bytes()
    path.write_bytes(body)
    try:
        yield
    finally:
        path.write_bytes(original)


def _verify(attested: Attested, *argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TELEPROMPT_", "DAGSTER_"))} | attested.env
    return subprocess.run([TELEPROMPT, "verify", *argv], env=env, capture_output=True, text=True, timeout=300)


def _one_fail(done: subprocess.CompletedProcess, artifact: str) -> str:
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-3000:]
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr[-3000:])
    fails = [line for line in done.stdout.splitlines() if line.startswith("FAIL ")]
    assert len(fails) == 1 and fails[0].startswith(f"FAIL {artifact} ({MODEL} v"), done.stdout
    return fails[0]


def _load_champion(attested: Attested, **kwargs):
    from teleprompt_assets.register import serving

    with environment(attested.env):
        return serving.load_champion(PROGRAM, **kwargs)


def _other_labels(state: dict) -> bytes:
    """The same program with every label it teaches (its demos, or a KNN program's pool) moved to another queue."""
    from teleprompt_assets.core.encoding import canonical_bytes
    from teleprompt_assets.samples.ticket_router import QUEUES

    changed = json.loads(json.dumps(state))
    moved, stack = 0, [changed]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("queue") in QUEUES:
                node["queue"] = QUEUES[(QUEUES.index(node["queue"]) + 1) % len(QUEUES)]
                moved += 1
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    assert moved, "the attested program teaches no label to change"
    return canonical_bytes(changed)


@pytest.mark.e2e  # the CLI in its own process
def test_the_untouched_champion_verifies_and_loads_as_attested(attested):
    for uri in (CHAMPION_URI, f"models:/{MODEL}/{attested.version}"):
        done = _verify(attested, uri, "--signer", SIGNER)
        assert done.returncode == 0 and done.stdout.startswith(f"OK {attested.uid}: ") and done.stdout.rstrip().endswith("program hash (bundle and registered model) verify"), done.stdout
    served = _load_champion(attested, attester=SIGNER)
    assert (served.version, served.vouched_by) == (attested.version, f"attestation {attested.uid} by {SIGNER}")


@pytest.mark.e2e
def test_a_malicious_model_pkl_fails_verify_and_load_and_never_runs(attested, tmp_path):
    from teleprompt_assets.register.artifacts import TamperedArtifact

    marker = tmp_path / "code-ran"
    with swapped(attested.pickle, pickle.dumps(_RunsCode(marker))):
        line = _one_fail(_verify(attested, CHAMPION_URI, "--signer", SIGNER), "program/data/model.pkl")
        assert "not the pickle of the attested program" in line and "not unpickled" in line
        with pytest.raises(TamperedArtifact, match=rf"^program/data/model\.pkl \({MODEL} v{attested.version}\): not the pickle"):
            _load_champion(attested)
        with pytest.raises(TamperedArtifact, match="model.pkl"):
            _load_champion(attested, attester=SIGNER)
    assert not marker.exists()


@pytest.mark.e2e
def test_a_pickle_of_another_program_is_refused_too(attested, tmp_path):
    """A well-formed served pickle of a program teaching other labels (what a careful attacker would
    write) differs from the attested program's in its demos."""
    from teleprompt_assets.core.spec import load_project
    from teleprompt_assets.optimize.teleprompters import load_state
    from teleprompt_assets.register.artifacts import TamperedArtifact, model_signature, served_pickle

    with environment(attested.env):
        spec = load_project(os.environ["TELEPROMPT_CONFIG"])[1][PROGRAM]
        other = load_state(spec, json.loads(_other_labels(json.loads(attested.state.read_text()))))
        forged = served_pickle(other, model_signature(spec).outputs)
    with swapped(attested.pickle, forged):
        line = _one_fail(_verify(attested, CHAMPION_URI), "program/data/model.pkl")
        assert "where the attested program's pickle has" in line
        with pytest.raises(TamperedArtifact, match="model.pkl"):
            _load_champion(attested)


@pytest.mark.e2e
def test_a_state_teaching_other_labels_fails_verify_and_load(attested):
    from teleprompt_assets.core.settings import load_settings
    from teleprompt_assets.core.spec import load_project
    from teleprompt_assets.core.tracking import connect
    from teleprompt_assets.register import registry
    from teleprompt_assets.register.artifacts import TamperedArtifact

    with swapped(attested.state, _other_labels(json.loads(attested.state.read_text()))):
        line = _one_fail(_verify(attested, CHAMPION_URI, "--signer", SIGNER), "program_state.json")
        assert "not the vouched-for programHash" in line
        with pytest.raises(TamperedArtifact, match=rf"^program_state\.json \({MODEL} v{attested.version}\): keccak256 is 0x[0-9a-f]{{64}}, not the vouched-for"):
            _load_champion(attested)
        with environment(attested.env):  # the pipeline's own reads (baseline, warm start) refuse it as well
            settings = load_settings()
            with pytest.raises(TamperedArtifact, match="not the registered program_hash"):
                registry.load_champion(connect(settings), load_project(settings.config_path)[1][PROGRAM])


@pytest.mark.e2e
def test_rewriting_the_registered_hash_as_well_does_not_get_past_the_attestation(attested):
    """The tag is the registry's word; the attestation is the attester's signature."""
    from teleprompt_assets.core.settings import load_settings
    from teleprompt_assets.core.tracking import connect
    from teleprompt_assets.register.artifacts import TamperedArtifact, program_hash

    body = _other_labels(json.loads(attested.state.read_text()))
    with environment(attested.env):
        client = connect(load_settings())
        registered = client.get_model_version(MODEL, str(attested.version)).tags["program_hash"]
        client.set_model_version_tag(MODEL, str(attested.version), "program_hash", program_hash(json.loads(body)))
    try:
        with swapped(attested.state, body):
            done = _verify(attested, CHAMPION_URI, "--signer", SIGNER)
            assert done.returncode == 1 and "Traceback" not in done.stderr
            assert any(line.startswith("FAIL program_state.json") for line in done.stdout.splitlines()), done.stdout
            assert "FAIL programHash: does not match the registered model version" in done.stdout
            with pytest.raises(TamperedArtifact, match="program_state.json"):
                _load_champion(attested)
    finally:
        with environment(attested.env):
            connect(load_settings()).set_model_version_tag(MODEL, str(attested.version), "program_hash", registered)


@pytest.mark.e2e
def test_an_mlmodel_pointing_the_loader_elsewhere_fails(attested):
    from teleprompt_assets.register.artifacts import TamperedArtifact

    text = attested.mlmodel.read_text()
    assert "model_path: data/model.pkl" in text
    with swapped(attested.mlmodel, text.replace("model_path: data/model.pkl", "model_path: data/other.pkl").encode()):
        line = _one_fail(_verify(attested, CHAMPION_URI), "program/MLmodel")
        assert "data/other.pkl" in line
        with pytest.raises(TamperedArtifact, match="MLmodel"):
            _load_champion(attested)


def test_only_the_pinned_attester_is_believed(attested):
    from teleprompt_assets.register.artifacts import TamperedArtifact

    stranger = Account.create().address
    with pytest.raises(TamperedArtifact, match=rf"attestation/ \({MODEL} v{attested.version}\): attestation.json: .*{stranger}"):
        _load_champion(attested, attester=stranger)
    assert _load_champion(attested).vouched_by.startswith(f"attestation {attested.uid}")


def test_an_oversized_bundle_file_in_the_registry_is_not_downloaded(attested, tmp_path):
    from teleprompt_assets.attest import bundles
    from teleprompt_assets.core.settings import load_settings
    from teleprompt_assets.core.tracking import connect
    from teleprompt_assets.register import registry

    with environment(attested.env):
        client = connect(load_settings())
        version = client.get_model_version(MODEL, str(attested.version))
        size = (attested.bundle / "rewards_tree.json").stat().st_size
        with pytest.raises(registry.OversizedArtifact, match=rf"attestation/rewards_tree.json: {size:,} bytes, over its limit of {size - 1:,}"):
            registry.download_attestation(client, version, tmp_path / "small", {**bundles.MAX_FILE_BYTES, "rewards_tree.json": size - 1})
        folder = registry.download_attestation(client, version, tmp_path / "ok", bundles.MAX_FILE_BYTES)
        assert sorted(p.name for p in folder.iterdir()) == sorted(bundles.BUNDLE_FILES)
