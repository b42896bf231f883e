"""End to end: a real sqlite MLflow store, a real Dagster instance, real DSPy programs, offline LM."""

import json
import os
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import mlflow
import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

from teleprompt_assets.attest import eas
from teleprompt_assets.attest.bundles import verify_bundle
from teleprompt_assets.core.settings import load_settings
from teleprompt_assets.core.spec import load_project
from teleprompt_assets.core.tracking import connect
from teleprompt_assets.definitions import INGEST_JOB, build_definitions
from teleprompt_assets.launch import run_partition
from teleprompt_assets.register.registry import CHAMPION
from teleprompt_assets.samples.seed import seed_ticket_router
from teleprompt_assets_tests.conftest import project_config, set_env

ATTESTER_KEY = "0x8f2a55949038a9610f50fb23b5883af3b4ecb3c3bb792cbcefbd1542c692be63"
API_KEY = "sk-teleprompt-test-not-a-real-key-4242"
END = date(2026, 11, 20)
DAYS = 5
PER_DAY = 20  # 21 held-out examples after curation and the label check, the same in every store (min_holdout is 20)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory):
    saved = set_env(tmp_path_factory.mktemp("e2e") / "tp")
    os.environ["TELEPROMPT_ATTESTER_KEY"] = ATTESTER_KEY
    os.environ["OPENAI_API_KEY"] = API_KEY
    try:
        settings = load_settings()
        spec = load_project(settings.config_path)[1]["ticket_router"]
        seeded = seed_ticket_router(settings, spec, END, days=DAYS, per_day=PER_DAY, seed=0)
        defs = build_definitions()
        with dg.instance_for_test() as instance:
            for day in seeded.days[:-1]:
                run_partition(defs, "ticket_router", day, instance, INGEST_JOB)
            first = run_partition(defs, "ticket_router", END.isoformat(), instance)
            second = run_partition(defs, "ticket_router", END.isoformat(), instance)
            yield settings, first, second, connect(settings), instance
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_counts_reconcile(pipeline):
    _, first, _, _, instance = pipeline
    assert len(first["raw_traces"]) == PER_DAY
    assert len(first["curated_traces"]) + len(first["quarantined_traces"]) == PER_DAY
    assert set(first["quarantined_traces"]["reason"]) <= {"no_ground_truth", "duplicate_exact", "near_duplicate", "contributor_cap"}


def test_version_has_lineage_and_is_champion(pipeline):
    _, first, _, client, _ = pipeline
    reg = first["registered_version"]
    version = client.get_model_version(reg["name"], str(reg["version"]))
    for tag in ("base_version", "window", "dataset_hash", "optimizer", "dagster_run_id", "program_hash", "delta_ppm", "baseline_score", "candidate_score", "contributor_count"):
        assert version.tags.get(tag), tag
    assert version.tags["dagster_run_id"] == first["run_id"]
    assert version.tags["window"] == f"{(END - timedelta(days=6)).isoformat()}..{END.isoformat()}"
    assert int(client.get_model_version_by_alias(reg["name"], CHAMPION).version) == reg["version"]


def test_version_follows_mlflow_conventions_and_links_back_to_dagster(pipeline):
    """Issue 18: params, 0-1 metrics, scores named with their unit, links to the Dagster run, and
    experiments that say whose traces they hold."""
    _, first, _, client, _ = pipeline
    reg = first["registered_version"]
    version = client.get_model_version(reg["name"], str(reg["version"]))
    run = client.get_run(version.run_id)
    for tags in (version.tags, run.data.tags):
        assert tags["dagster_run_url"].endswith(f"/runs/{first['run_id']}") and 0 <= float(tags["baseline_mean"]) <= 1, tags
    assert run.data.params["optimizer"] == "auto" and "optimizer.max_labeled_demos" in run.data.params
    chosen = run.data.params["optimizer.chosen"]  # auto's pick, with every candidate's dev score beside it
    assert chosen in ("KNNFewShot", "BootstrapFewShot", "BootstrapFewShotWithRandomSearch", "MIPROv2") and f"dev_score.{chosen}" in run.data.metrics
    assert 0 <= run.data.metrics["candidate_mean"] <= 1 and run.data.metrics["eval_count"] > 0
    production = client.get_experiment_by_name("teleprompt-production")
    assert production.tags.get("program") == "ticket_router" and production.tags.get("mlflow.note.content")


def test_deltaone_attestation_signature_and_uid(pipeline):
    _, first, _, client, _ = pipeline
    report = first["evaluation_report"]["comparison"]
    assert report["deltaone"] and report["significant"], report
    att = first["deltaone_attestation"]
    assert att["attested"] and att["verifies"], att
    body = json.loads((Path(att["bundle"]) / "attestation.json").read_text())
    typed = {"domain": body["domain"] | {"chainId": int(body["domain"]["chainId"])}, "types": body["types"], "primaryType": "Attest",
             "message": body["message"] | {"time": int(body["message"]["time"]), "expirationTime": int(body["message"]["expirationTime"])}}
    sig = body["signature"]
    signature = bytes.fromhex(sig["r"][2:] + sig["s"][2:]) + bytes([sig["v"]])
    assert Account.recover_message(encode_typed_data(full_message=typed), signature=signature) == att["attester"]
    msg = body["message"]
    assert eas.offchain_uid(schema=msg["schema"], recipient=msg["recipient"], time=int(msg["time"]), expiration_time=int(msg["expirationTime"]),
                            revocable=msg["revocable"], ref_uid=msg["refUID"], data=msg["data"], salt=msg["salt"]) == body["uid"]
    reg = first["registered_version"]
    assert client.get_model_version(reg["name"], str(reg["version"])).tags["attestation_uid"] == body["uid"]
    assert verify_bundle(Path(att["bundle"]), att["attester"]) == []


def test_rerun_creates_no_second_version_or_attestation(pipeline):
    settings, first, second, client, _ = pipeline
    name = first["registered_version"]["name"]
    assert len(client.search_model_versions(f"name = '{name}'")) == 1
    assert second["registered_version"]["version"] == first["registered_version"]["version"]
    assert second["registered_version"]["created"] is False
    assert second["deltaone_attestation"]["uid"] == first["deltaone_attestation"]["uid"]
    assert len(list((settings.outbox / "ticket_router").iterdir())) == 1


def test_champion_loads_with_mlflow_dspy_and_runs_offline(pipeline):
    import dspy

    from teleprompt_assets.core.lm import offline_lm

    _, first, _, _, _ = pipeline
    model = mlflow.dspy.load_model(f"models:/{first['registered_version']['name']}@{CHAMPION}")
    with dspy.context(lm=offline_lm()):
        prediction = model(message="My package for order #10482 has not arrived yet.")
    assert prediction.queue == "shipping"
    from teleprompt_assets.optimize.knn import KNNProgram

    assert len(model.pool) > 0 if isinstance(model, KNNProgram) else len(model.route.demos) > 0


def test_no_secret_in_any_file_the_run_wrote(pipeline):
    settings, first, _, _, _ = pipeline
    assert first["deltaone_attestation"]["attester"] == Account.from_key(ATTESTER_KEY).address
    needles = [ATTESTER_KEY[2:].lower().encode(), ATTESTER_KEY[2:].upper().encode(), API_KEY.encode()]
    scanned = 0
    for path in settings.home.rglob("*"):
        if path.is_file():
            body = path.read_bytes()
            scanned += 1
            assert not any(n in body for n in needles), f"secret found in {path}"
    assert scanned > 20  # mlflow.db, pickled model, artifacts, bundle, Dagster storage


def test_each_dagster_run_is_a_finished_mlflow_run_holding_the_version(pipeline):
    settings, first, _, client, _ = pipeline
    experiment = client.get_experiment_by_name(settings.pipeline_experiment)
    assert experiment.artifact_location.startswith(settings.artifact_root)
    runs = client.search_runs([experiment.experiment_id], f"tags.dagster_run_id = '{first['run_id']}'")
    [run] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert run.info.status == "FINISHED"
    assert run.data.metrics["ticket_router.delta_ppm"] == first["evaluation_report"]["comparison"]["delta_ppm"]  # one namespace per program
    assert run.data.tags["ticket_router.optimizer"] == "auto" and run.data.tags["ticket_router.optimizer_chosen"]
    assert run.data.tags["ticket_router.attestation_uid"] == first["deltaone_attestation"]["uid"]
    version_run = client.get_run(first["registered_version"]["run_id"])  # the version's own child run
    assert version_run.data.tags["mlflow.parentRunId"] == run.info.run_id and version_run.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(version_run.info.run_id)}
    assert {"ab_report.md", "evaluation.json", "contributors.json", "program_state.json", "attestation"} <= artifacts
    unfinished = client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")
    assert unfinished == []


def test_cli_verify_checks_the_registered_model_and_proof_verifies(pipeline, capsys, tmp_path):
    import shutil

    from teleprompt_assets.attest.bundles import SCHEMA
    from teleprompt_assets.attest.merkle import verify_proof
    from teleprompt_assets.cli import main

    _, first, _, _, _ = pipeline
    att = first["deltaone_attestation"]
    assert main(["verify", att["bundle"], "--signer", att["attester"]]) == 0
    assert "and registered model" in capsys.readouterr().out
    name, version = first["registered_version"]["name"], first["registered_version"]["version"]
    for uri in (f"models:/{name}/{version}", f"models:/{name}@{CHAMPION}"):  # the copy the registry holds, from any host
        assert main(["verify", uri, "--signer", att["attester"]]) == 0
        assert capsys.readouterr().out.startswith(f"OK {att['uid']}: ")
    address = first["contributor_rewards"].sort("weight_ppm", descending=True)["contributor"][0]
    assert main(["proof", address, "--program", "ticket_router"]) == 0
    proof = json.loads(capsys.readouterr().out)
    data = eas.decode_data(SCHEMA, json.loads((Path(att["bundle"]) / "attestation.json").read_text())["message"]["data"])
    assert proof["rewardsRoot"] == "0x" + data["rewardsRoot"].hex()
    assert verify_proof(proof["rewardsRoot"], ["address", "uint256"], [address, proof["weightPpm"]], proof["proof"])
    tampered = tmp_path / "tampered"
    shutil.copytree(att["bundle"], tampered)
    program = tampered / "program.json"
    program.write_text(program.read_text().replace("shipping", "sales", 1))
    assert main(["verify", str(tampered), "--offline"]) == 1
    assert "program.json" in capsys.readouterr().out


def test_pipeline_bundle_verifies_with_the_eas_sdk_and_openzeppelin(pipeline):
    from teleprompt_assets_tests.interop.node import verify_with_js

    _, first, _, _, _ = pipeline
    att = first["deltaone_attestation"]
    result = verify_with_js(Path(att["bundle"]), att["attester"])
    assert result["ok"], result["errors"]
    assert result["uid"] == att["uid"] and result["signer"] == att["attester"]
    assert all(result["checks"].values())


def test_cli_status_reports_the_champion_and_attestation(pipeline, capsys):
    from teleprompt_assets.cli import main

    _, first, _, _, _ = pipeline
    assert main(["status", "--json"]) == 0
    info = {i["program"]: i for i in json.loads(capsys.readouterr().out)}["ticket_router"]
    assert info["champion"] == first["registered_version"]["version"]
    assert info["last_attestation"] == first["deltaone_attestation"]["uid"]
    assert info["attester"] == first["deltaone_attestation"]["attester"] == Account.from_key(ATTESTER_KEY).address
    assert info["last_run"] == first["run_id"]
    assert info["pending_traces"] >= 0


def test_a_prompt_over_budget_stops_the_run_before_evaluation(pipeline, tmp_path):
    """The prompt_quality check is emitted by the compile graph's last op; failing, it blocks what follows."""
    from teleprompt_assets.definitions import OPTIMIZE_JOB
    from teleprompt_assets.defs.partitions import key_of

    settings, first, _, client, instance = pipeline
    with project_config(tmp_path, "ticket_router", prompt_token_budget=5):
        job = build_definitions().resolve_job_def(OPTIMIZE_JOB)
        result = job.execute_in_process(instance=instance, partition_key=key_of("ticket_router", END.isoformat()), raise_on_error=False)
    assert not result.success
    [gate] = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION" and e.event_specific_data.check_name == "prompt_quality"]
    assert not gate.passed and "budget" in gate.metadata["problems"].value
    assert [e.step_key for e in result.all_events if e.is_step_failure] == ["compiled_program.collect_compiled"]
    ran = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert not ran & {"evaluation_report", "registered_version", "deltaone_attestation"}
    name = first["registered_version"]["name"]
    assert sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'")) == [first["registered_version"]["version"]]


def test_a_regressing_candidate_is_registered_but_kept_from_serving_and_the_run_succeeds(pipeline, tmp_path):
    """Last in the module: it adds a version. An optimizer that keeps no demos scores below v1: a
    result the run reports (a warning, the refusal), not a failure."""
    from teleprompt_assets.definitions import OPTIMIZE_JOB
    from teleprompt_assets.defs.partitions import key_of

    settings, first, _, client, instance = pipeline
    with project_config(tmp_path, "ticket_router", optimizer={"name": "LabeledFewShot", "params": {"k": 0}}):
        job = build_definitions().resolve_job_def(OPTIMIZE_JOB)
        result = job.execute_in_process(instance=instance, partition_key=key_of("ticket_router", END.isoformat()), raise_on_error=False)
    assert result.success
    checks = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    gate = next(c for c in checks if c.check_name == "no_regression")
    assert not gate.passed and gate.severity == dg.AssetCheckSeverity.WARN and "kept out of serving" in (gate.description or "")
    name = first["registered_version"]["name"]
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
    assert versions == [first["registered_version"]["version"], first["registered_version"]["version"] + 1]
    assert int(client.get_model_version_by_alias(name, CHAMPION).version) == first["registered_version"]["version"]
    [decision] = result.output_for_node("champion_alias").values()
    assert decision["decision"].startswith("not promoted: C=") and not decision["champion"]
    assert result.output_for_node("deltaone_attestation")[key_of("ticket_router", END.isoformat())] == {"attested": False, "reason": "DeltaOne not reached"}


def _versions(client, name: str) -> list[int]:
    return sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))


def test_a_window_without_traffic_compiles_registers_and_attests_nothing(pipeline):
    """Issue 14: a day whose window has no traffic made an empty program champion."""
    _, first, _, client, instance = pipeline
    name = first["registered_version"]["name"]
    before, champion = _versions(client, name), client.get_model_version_by_alias(name, CHAMPION).version
    out = run_partition(build_definitions(), "ticket_router", (END - timedelta(days=40)).isoformat(), instance)
    reason = out["compiled_program"]["skipped"]
    assert reason.startswith("nothing to optimize: the window ") and "has no training examples" in reason
    assert out["registered_version"] == {"name": name, "skipped": reason}
    assert out["champion_alias"]["decision"] == reason and not out["champion_alias"]["champion"]
    assert out["deltaone_attestation"] == {"attested": False, "reason": reason}
    assert len(out["contributor_rewards"]) == 0
    assert _versions(client, name) == before
    assert client.get_model_version_by_alias(name, CHAMPION).version == champion


def test_a_candidate_measured_on_too_few_held_out_examples_is_not_promoted_or_attested(pipeline):
    """The first seeded day's window holds one day of traffic: a handful of held-out examples."""
    _, first, _, client, instance = pipeline
    name = first["registered_version"]["name"]
    champion = client.get_model_version_by_alias(name, CHAMPION).version
    out = run_partition(build_definitions(), "ticket_router", (END - timedelta(days=DAYS - 1)).isoformat(), instance)
    n = out["evaluation_report"]["comparison"]["n"]
    assert 0 < n < 20
    assert out["champion_alias"]["decision"] == f"not promoted: measured on {n} held-out examples, fewer than min_holdout=20"
    assert out["deltaone_attestation"] == {"attested": False, "reason": f"evidence too small: {n} held-out examples, fewer than min_holdout=20"}
    assert client.get_model_version_by_alias(name, CHAMPION).version == champion
    refused = client.get_model_version(name, str(out["registered_version"]["version"]))
    assert refused.tags["promotion_refused"] == out["champion_alias"]["decision"]
