"""Curation believes signatures, not tags (issue 25, item 1), and survives hostile span JSON (item 3).

Every trace here is logged to a real sqlite MLflow store through the trace contract helper (signed
by the app key) or, for the attacks, the way a writer without the key would: MLflow's own API, or
the store's tables directly.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import polars as pl
import pytest
from eth_account import Account

from teleprompt_assets.core import identity
from teleprompt_assets.core.config import QualityConfig, TrustConfig
from teleprompt_assets.core.settings import load_settings
from teleprompt_assets.core.spec import load_project
from teleprompt_assets.core.tracking import connect, experiment_id
from teleprompt_assets.curate import quality, validation
from teleprompt_assets.ingest import traces
from teleprompt_assets.ingest.tracing import CONTRIBUTOR_TAG, PROGRAM_TAG, label_trace, traced_call
from teleprompt_assets.samples.seed import day_start_ns
from teleprompt_assets_tests.conftest import REPO
from teleprompt_assets_tests.ingest.test_traces import DAY, GOOD

OTHER_KEY = "0x" + "42" * 32
OTHER = identity.Signer(Account.from_key(OTHER_KEY).address, "test", bytes.fromhex(OTHER_KEY[2:]))
SAMPLE = TrustConfig(signers=[identity.DEMO_APP_ADDRESS])
CONFIG = QualityConfig(max_contributor_share=None, dedupe_near=False)


@pytest.fixture
def store(tp_home):
    settings = load_settings()
    client = connect(settings)
    spec = load_project(settings.config_path)[1]["ticket_router"]
    return client, experiment_id(client, settings, spec.config.experiment), spec, Path(settings.tracking_uri.removeprefix("sqlite:///"))


def _log(exp_id, offset_s, message="My parcel is late", contributor=GOOD, signer=None, labeller=None, queue="shipping"):
    trace_id, _ = traced_call("ticket_router", contributor, {"message": message}, lambda message: {"queue": queue},
                              experiment_id=exp_id, start_time_ns=day_start_ns(DAY) + offset_s * 10**9, signer=signer)
    label_trace(trace_id, contributor, {"csat": 0.8}, {"queue": queue}, signer=labeller)
    return trace_id


def _curate(client, exp_id, spec, trust: TrustConfig | None, config: QualityConfig = CONFIG) -> quality.CuratedDay:
    raw = traces.read_day(client, exp_id, DAY.isoformat(), processes=1)
    return quality.curate_day(raw, spec, config, now_ms=2**62, trust=trust.policy("ticket_router") if trust else None)


def _reasons(day: quality.CuratedDay) -> dict[str, str]:
    return dict(zip(day.quarantined["trace_id"], day.quarantined["reason"]))


def test_the_sample_config_registers_the_demo_key_the_helper_signs_with():
    project, _ = load_project(REPO / "teleprompt.yaml")
    assert project.trust is not None and project.trust.policy("ticket_router").signers == {identity.DEMO_APP_ADDRESS}
    assert project.trust.policy("outreach_reply").labellers == {identity.DEMO_APP_ADDRESS}


@pytest.mark.parametrize(("trust", "message"), [
    ({"signers": [GOOD.lower()]},
     f"trust.signers: Value error, {GOOD.lower()} is not EIP-55 checksummed (copy the address with its mixed case from where it was issued)"),
    ({"signers": []}, "trust.signers: List should have at least 1 item after validation, not 0"),
    ({"signers": [GOOD], "programs": {"tciket_router": {"signers": [GOOD]}}}, "trust: Value error, programs.tciket_router: not a program of this config"),
    ({"signers": [GOOD], "unsigned": "ignore"}, "trust.unsigned: Input should be 'quarantine' or 'accept'"),
])
def test_a_bad_trust_section_fails_at_load_in_one_line_naming_the_field(tmp_path, trust, message):
    import yaml

    from teleprompt_assets.core.config import ConfigError

    config = yaml.safe_load((REPO / "teleprompt.yaml").read_text()) | {"trust": trust}
    path = tmp_path / "teleprompt.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as raised:
        load_project(path)
    assert str(raised.value) == f"{path}: {message}"


def test_signed_traces_are_accepted_on_what_was_signed_and_the_run_says_what_identity_rests_on(store):
    client, exp_id, spec, _ = store
    ids = [_log(exp_id, 10 + i, f"parcel {i} is late") for i in range(3)]
    raw = traces.read_day(client, exp_id, DAY.isoformat(), processes=1)
    assert raw["claim"].is_not_null().all() and all(json.loads(a)[0]["signature"] for a in raw["assessments"])
    day = _curate(client, exp_id, spec, SAMPLE)
    assert day.accepted["trace_id"].to_list() == ids and day.quarantined.height == 0
    assert day.identity == {"labels_counted": 6, "signed": 3}
    assert day.trust.startswith("verified") and "DEMO" in day.trust
    assert day.accepted.select("feedback", "expectations").row(0) == ('{"csat":0.8}', '{"queue":"shipping"}')
    unverified = _curate(client, exp_id, spec, None)
    assert unverified.accepted.equals(day.accepted) and unverified.trust.startswith("unverified: no trust section")


def test_unsigned_traces_are_quarantined_unless_the_config_accepts_them(store):
    client, exp_id, spec, _ = store
    signed = _log(exp_id, 10)
    span = mlflow.start_span_no_context("ticket_router", inputs={"message": "an old unsigned trace"}, tags={PROGRAM_TAG: "ticket_router", CONTRIBUTOR_TAG: GOOD},
                                        experiment_id=exp_id, start_time_ns=day_start_ns(DAY) + 20 * 10**9)
    span.end(outputs={"queue": "billing"})
    mlflow.log_expectation(trace_id=span.trace_id, name="queue", value="billing")
    day = _curate(client, exp_id, spec, SAMPLE)
    assert day.accepted["trace_id"].to_list() == [signed] and _reasons(day) == {span.trace_id: "unsigned"}
    migrating = _curate(client, exp_id, spec, SAMPLE.model_copy(update={"unsigned": "accept"}))
    assert sorted(migrating.accepted["trace_id"]) == sorted([signed, span.trace_id]) and migrating.identity["unsigned_accepted"] == 1
    assert "accepted on their tags" in migrating.trust


def test_a_trace_signed_by_an_unregistered_key_is_quarantined_unless_its_program_registers_it(store):
    client, exp_id, spec, _ = store
    own = _log(exp_id, 10)
    other = _log(exp_id, 20, "another parcel is late", signer=OTHER, labeller=OTHER)
    day = _curate(client, exp_id, spec, SAMPLE)
    assert _reasons(day) == {other: "unknown_signer"} and OTHER.address in day.quarantined["detail"][0]
    per_program = TrustConfig(signers=[identity.DEMO_APP_ADDRESS], programs={"ticket_router": {"signers": [OTHER.address]}})
    assert _reasons(_curate(client, exp_id, spec, per_program)) == {own: "unknown_signer"}


def test_payload_edited_after_signing_or_a_copied_signature_is_a_bad_signature(store):
    """A writer of the store's tables changes a signed trace's inputs; another copies a signature tag."""
    client, exp_id, spec, db = store
    edited = _log(exp_id, 10, "x" * 1200)  # past the preview cut: read from the spans
    intact = _log(exp_id, 20)
    with sqlite3.connect(db) as conn:
        content = json.loads(conn.execute("select content from spans where trace_id = ? and parent_span_id is null", (edited,)).fetchone()[0])
        content["attributes"]["mlflow.spanInputs"] = json.dumps({"message": "y" * 1200})
        conn.execute("update spans set content = ? where trace_id = ? and parent_span_id is null", (json.dumps(content), edited))
    copy = mlflow.start_span_no_context("ticket_router", inputs={"message": "My parcel is late"}, experiment_id=exp_id, start_time_ns=day_start_ns(DAY) + 5 * 10**9,
                                        tags={PROGRAM_TAG: "ticket_router", CONTRIBUTOR_TAG: OTHER.address, identity.SIGNATURE_TAG: client.get_trace(intact).info.tags[identity.SIGNATURE_TAG]})
    copy.end(outputs={"queue": "shipping"})
    day = _curate(client, exp_id, spec, SAMPLE)
    assert _reasons(day) == {edited: "bad_signature", copy.trace_id: "bad_signature"}
    details = dict(zip(day.quarantined["trace_id"], day.quarantined["detail"]))
    assert "inputs differ" in details[edited] and "copied signature" in details[copy.trace_id]
    assert day.accepted["trace_id"].to_list() == [intact]


def test_a_moved_start_time_and_changed_tags_are_read_as_signed(store):
    """Tags and the stored start time changed by a store writer: the row keeps the signed values."""
    client, exp_id, spec, db = store
    trace_id = _log(exp_id, 3_600)
    signed_ms = day_start_ns(DAY) // 10**6 + 3_600_000
    client.set_trace_tag(trace_id, CONTRIBUTOR_TAG, OTHER.address)
    client.set_trace_tag(trace_id, PROGRAM_TAG, "outreach_reply")
    with sqlite3.connect(db) as conn:
        conn.execute("update trace_info set timestamp_ms = ? where request_id = ?", (signed_ms - 1_000_000, trace_id))
    day = _curate(client, exp_id, spec, SAMPLE)
    row = day.accepted.row(0, named=True)
    assert (row["contributor"], row["program"], row["timestamp_ms"]) == (GOOD, "ticket_router", signed_ms)
    assert day.identity["retagged"] == 1 and day.identity["time_moved"] == 1


def test_only_registered_labellers_count_and_the_latest_signed_label_wins(store):
    client, exp_id, spec, _ = store
    trace_id = _log(exp_id, 10)  # labelled shipping by the app key
    label_trace(trace_id, GOOD, {"csat": 0.2}, {"queue": "billing"}, signer=OTHER)  # later, by another key
    mlflow.log_expectation(trace_id=trace_id, name="queue", value="sales")  # later still, unsigned
    day = _curate(client, exp_id, spec, SAMPLE)
    assert day.accepted.select("feedback", "expectations").row(0) == ('{"csat":0.8}', '{"queue":"shipping"}')
    assert day.identity == {"labels_counted": 2, "labels_unauthorised": 2, "labels_unsigned": 1, "signed": 1}
    labellers = SAMPLE.model_copy(update={"labellers": [identity.DEMO_APP_ADDRESS, OTHER.address]})
    assert _curate(client, exp_id, spec, labellers).accepted.select("feedback", "expectations").row(0) == ('{"csat":0.2}', '{"queue":"billing"}')
    only_other = SAMPLE.model_copy(update={"labellers": [OTHER.address]})
    assert _curate(client, exp_id, spec, only_other).accepted.select("expectations").item() == '{"queue":"billing"}'


DEEP_CHILD = textwrap.dedent("""
    import json, sys
    import eth_account  # the code location imports it: py_ecc raises the recursion limit to 100,000
    from mlflow import MlflowClient
    from teleprompt_assets.core.spec import load_project
    from teleprompt_assets.curate.quality import curate_day
    from teleprompt_assets.ingest import traces
    uri, exp_id, day, config = sys.argv[1:]
    project, specs = load_project(config)
    raw = traces.read_day(MlflowClient(uri), exp_id, day, processes=1)
    curated = curate_day(raw, specs["ticket_router"], project.quality, now_ms=2**62, trust=project.trust.policy("ticket_router"))
    print(json.dumps({"read": raw.height, "accepted": curated.accepted["trace_id"].to_list(),
                      "quarantined": dict(zip(curated.quarantined["trace_id"], curated.quarantined["reason"]))}))
""")


def test_a_deeply_nested_root_span_is_quarantined_and_the_rest_of_its_day_curated(store):
    """Issue 25, item 3: root-span inputs 150,000 levels deep made read_day die with SIGSEGV in the code
    location (eth-account's py_ecc lifts the recursion limit, the C parser overflows the stack), so one
    trace failed its program's day on every run. Written the way an adversary with the store would
    (MLflow's client refuses to serialize such a value), read in a child process that imports
    eth-account as the code location does: a crash there cannot take the test run with it."""
    client, exp_id, spec, db = store
    kept = [_log(exp_id, 10 + i, f"parcel {i} is late") for i in range(3)]
    deepest, deep = _log(exp_id, 30, "x" * 1200), _log(exp_id, 40, "z" * 1200)
    with sqlite3.connect(db) as conn:
        for trace_id, depth in ((deepest, 150_000), (deep, 60_000)):
            content = json.loads(conn.execute("select content from spans where trace_id = ? and parent_span_id is null", (trace_id,)).fetchone()[0])
            content["attributes"]["mlflow.spanInputs"] = '{"message": ' + "[" * depth + "]" * depth + "}"
            conn.execute("update spans set content = ? where trace_id = ? and parent_span_id is null", (json.dumps(content), trace_id))
    done = subprocess.run([sys.executable, "-c", DEEP_CHILD, str(client.tracking_uri), exp_id, DAY.isoformat(), str(REPO / "teleprompt.yaml")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["read"] == 5 and result["accepted"] == kept
    assert result["quarantined"] == {deepest: "payload_too_large", deep: "payload_too_deep"}  # 300,000 chars is over the size limit too


def test_deep_payloads_in_a_raw_table_are_quarantined_not_parsed():
    """The contract check on its own: hostile JSON in any parsed column is bounded before parsing."""
    spec = load_project(REPO / "teleprompt.yaml")[1]["ticket_router"]
    base = {"trace_id": "tr-1", "timestamp_ms": 1, "state": "OK", "experiment_id": "1", "program": "ticket_router", "contributor": GOOD,
            "inputs": '{"message": "hi"}', "outputs": '{"queue": "sales"}', "feedback": "{}", "expectations": '{"queue": "sales"}'}
    deep = "[" * 50_000 + "]" * 50_000
    rows = [base | {"trace_id": "tr-in", "inputs": '{"message": ' + deep + "}"}, base | {"trace_id": "tr-out", "outputs": '{"queue": ' + deep + "}"},
            base | {"trace_id": "tr-fb", "feedback": '{"csat": ' + deep + "}"}]
    accepted, quarantined = validation.validate(pl.DataFrame(rows, schema=traces.RAW_SCHEMA), spec, now_ms=2)
    assert accepted.height == 0 and set(quarantined["reason"]) == {"payload_too_deep"}


def test_vouching_in_worker_processes_gives_what_vouching_here_gives(store, monkeypatch):
    """A large table is vouched for in slices across worker processes: same rows, same order, same
    counts, whatever the slicing (thresholds lowered so a small table takes that path)."""
    client, exp_id, spec, _ = store
    intact = _log(exp_id, 10)
    for i in range(6):
        _log(exp_id, 20 + i, f"parcel {i} is late", signer=OTHER if i % 3 == 0 else None, labeller=OTHER if i % 2 else None)
    copy = mlflow.start_span_no_context("ticket_router", inputs={"message": "My parcel is late"}, experiment_id=exp_id, start_time_ns=day_start_ns(DAY) + 5 * 10**9,
                                        tags={PROGRAM_TAG: "ticket_router", CONTRIBUTOR_TAG: OTHER.address, identity.SIGNATURE_TAG: client.get_trace(intact).info.tags[identity.SIGNATURE_TAG]})
    copy.end(outputs={"queue": "shipping"})
    raw = traces.read_day(client, exp_id, DAY.isoformat(), processes=1)
    policy = SAMPLE.policy("ticket_router")
    here, here_notes = validation.vouch_frame(raw, policy)
    curated_here = quality.curate_day(raw, spec, CONFIG, now_ms=2**62, trust=policy)
    monkeypatch.setattr(validation, "VOUCH_IN_WORKERS_FROM", 2)
    monkeypatch.setattr(validation, "VOUCH_ROWS_PER_PROCESS", 2)
    spread, spread_notes = validation.vouch_table(raw, policy, processes=2)
    assert spread.equals(here) and spread_notes == here_notes
    assert sorted(r for r in here["reason"] if r) == ["bad_signature", "unknown_signer", "unknown_signer"]
    curated = quality.curate_day(raw, spec, CONFIG, now_ms=2**62, trust=policy)
    assert curated.accepted.equals(curated_here.accepted) and curated.quarantined.equals(curated_here.quarantined)
    assert curated.identity == curated_here.identity and curated.accepted.height >= 1
