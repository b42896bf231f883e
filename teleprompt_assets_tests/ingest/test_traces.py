import json
from datetime import date

import mlflow
import pytest

from teleprompt_assets.core.settings import load_settings
from teleprompt_assets.core.spec import load_project
from teleprompt_assets.core.tracking import connect, experiment_id
from teleprompt_assets.curate import validation
from teleprompt_assets.ingest import traces
from teleprompt_assets.ingest.tracing import PROGRAM_TAG, label_trace, traced_call
from teleprompt_assets.samples.seed import day_start_ns

DAY = date(2026, 3, 4)
GOOD = "0xA2DFbbE547B9fe2Eb36D63B62AE89F1b950f0dD8"


@pytest.fixture
def store(tp_home):
    settings = load_settings()
    client = connect(settings)
    spec = load_project(settings.config_path)[1]["ticket_router"]
    return client, experiment_id(client, settings, spec.config.experiment), spec


def _log(exp_id, contributor=GOOD, program="ticket_router", message="My parcel is late", queue="shipping", offset_s=60, feedback=None, expectations=None):
    trace_id, _ = traced_call(program, contributor, {"message": message}, lambda message: {"queue": queue} if queue else {},
                              experiment_id=exp_id, start_time_ns=day_start_ns(DAY) + offset_s * 10**9)
    label_trace(trace_id, contributor, feedback if feedback is not None else {"resolved_first_touch": True},
                expectations if expectations is not None else {"queue": "shipping"})
    return trace_id


def test_trace_becomes_a_row_with_contract_fields_and_hash(store):
    client, exp_id, spec = store
    trace_id = _log(exp_id, feedback={"resolved_first_touch": True, "csat": 0.75})
    raw = traces.read_day(client, exp_id, DAY.isoformat())
    assert raw.height == 1
    row = raw.row(0, named=True)
    assert row["trace_id"] == trace_id and row["program"] == "ticket_router" and row["contributor"] == GOOD
    assert json.loads(row["inputs"]) == {"message": "My parcel is late"}
    assert json.loads(row["outputs"]) == {"queue": "shipping"}
    assert json.loads(row["feedback"]) == {"resolved_first_touch": True, "csat": 0.75}
    assert json.loads(row["expectations"]) == {"queue": "shipping"}
    assert row["timestamp_ms"] == day_start_ns(DAY) // 10**6 + 60_000
    curated, quarantined = validation.validate(raw, spec, now_ms=2**62)
    assert quarantined.height == 0
    assert curated["trace_hash"][0] == validation.trace_hash(row) and curated["trace_hash"][0].startswith("0x")


def test_other_days_are_not_read(store):
    client, exp_id, _ = store
    _log(exp_id, offset_s=86_400 + 5)
    _log(exp_id, offset_s=-5)
    assert traces.read_day(client, exp_id, DAY.isoformat()).height == 0


def test_contract_violations_are_quarantined_with_reasons(store):
    client, exp_id, spec = store
    cases = {
        "invalid_contributor": dict(contributor="0x1234"),
        "contributor_not_checksummed": dict(contributor=GOOD.lower()),
        "program_mismatch": dict(program="someone_else"),
        "missing_outputs": dict(queue=None),
        "invalid_score": dict(feedback={"csat": 5}),
        "no_ground_truth": dict(expectations={}),
    }
    for i, kwargs in enumerate(cases.values()):
        _log(exp_id, offset_s=100 + i, **kwargs)
    span = mlflow.start_span_no_context("ticket_router", inputs={"message": "hi"}, tags={PROGRAM_TAG: "ticket_router"},
                                        experiment_id=exp_id, start_time_ns=day_start_ns(DAY) + 10**12)
    span.end(outputs={"queue": "sales"})
    raw = traces.read_day(client, exp_id, DAY.isoformat())
    curated, quarantined = validation.validate(raw, spec, now_ms=2**62)
    assert curated.height == 0 and quarantined.height == raw.height == len(cases) + 1
    assert sorted(quarantined["reason"]) == sorted([*cases, "missing_contributor"])
    assert all(quarantined["detail"].str.len_chars() > 0)


def test_a_resumed_count_walks_by_timestamp_and_counts_ties_across_pages_once(store):
    """The scan resumes from a timestamp, not an offset (an OFFSET query slows with the rows it skips:
    0.8 s a page at 2k, 1.6 s at 96k on the 100k store), and traces sharing a millisecond that spill
    over a page are counted once."""
    client, exp_id, _ = store
    for offset_s in (5, 5, 5, 5, 7, 9, 9, 11):  # four at one ms: more than a page of 3
        _log(exp_id, offset_s=offset_s)
    _log(exp_id, offset_s=-3600)  # the previous day
    assert traces.count_day(client, exp_id, DAY.isoformat(), page=3) == (8, None)
    ticks, scan, count = 0, None, None
    while count is None:
        count, scan = traces.count_day(client, exp_id, DAY.isoformat(), scan, deadline=0.0, page=3)
        ticks += 1
        assert scan is None or set(scan) == {"from_ms", "counted"}
    assert count == 8 and ticks >= 3


def test_a_trace_whose_spans_are_corrupt_is_marked_unreadable_while_the_store_answers(store):
    """The other side of failing the read when the store is gone (test_outages): one broken trace
    is quarantined (``unreadable_payload``), the rest of the day is read."""
    import sqlite3

    client, exp_id, spec = store
    broken = _log(exp_id, message="long " * 300, offset_s=10)  # preview cut: payloads come from the spans
    fine = _log(exp_id, offset_s=20)
    with sqlite3.connect(load_settings().tracking_uri.removeprefix("sqlite:///")) as con:
        con.execute("UPDATE spans SET content = '{not json' WHERE trace_id = ?", (broken,))
    raw = traces.read_day(client, exp_id, DAY.isoformat(), processes=1)
    sources = dict(zip(raw["trace_id"], raw["payload_from"]))
    assert sources[broken].startswith("unreadable: ") and sources[fine] == "preview"
    _, quarantined = validation.validate(raw, spec, now_ms=2**62)
    assert quarantined["reason"].to_list() == ["unreadable_payload"]
