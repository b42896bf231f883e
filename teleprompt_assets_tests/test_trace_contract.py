import polars as pl

from teleprompt_assets import trace_contract, traces
from teleprompt_assets.programs import load_project

GOOD = "0xA2DFbbE547B9fe2Eb36D63B62AE89F1b950f0dD8"


def test_duplicate_ids_and_future_timestamps_are_quarantined():
    row = {"trace_id": "tr-1", "timestamp_ms": 1_000, "state": "OK", "experiment_id": "1", "program": "ticket_router", "contributor": GOOD,
           "inputs": '{"message": "hi"}', "outputs": '{"queue": "sales"}', "feedback": "{}", "expectations": '{"queue": "sales"}'}
    future = row | {"trace_id": "tr-2", "timestamp_ms": 10**15}
    spec = load_project("teleprompt.yaml")[1]["ticket_router"]
    curated, quarantined = trace_contract.validate(traces.raw_frame([row, row, future]), spec, now_ms=2_000)
    assert curated.height == 1
    assert sorted(quarantined["reason"]) == ["duplicate_trace_id", "future_timestamp"]


def test_canonical_json_is_stable_and_order_free():
    row = {"trace_id": "t", "program": "p", "contributor": GOOD, "timestamp_ms": 5, "inputs": '{"b": 1, "a": "é"}',
           "outputs": '{"x": 1}', "feedback": '{"z": true, "y": 0.5}', "expectations": "{}"}
    swapped = row | {"inputs": '{"a": "é", "b": 1}', "feedback": '{"y": 0.5, "z": true}'}
    assert trace_contract.canonical_json(row) == trace_contract.canonical_json(swapped)
    assert trace_contract.canonical_json(row) == '{"contributor":"0xA2DFbbE547B9fe2Eb36D63B62AE89F1b950f0dD8","expectations":{},"feedback":{"y":0.5,"z":true},"inputs":{"a":"é","b":1},"outputs":{"x":1},"program":"p","timestamp_ms":5,"trace_id":"t"}'.encode()
    assert isinstance(traces.raw_frame([]), pl.DataFrame)


def test_a_non_checksummed_contributor_is_not_corrected_in_the_detail():
    """For a mistyped address the corrected spelling is someone else's valid address: never suggest it."""
    row = {"trace_id": "tr-1", "timestamp_ms": 1_000, "state": "OK", "experiment_id": "1", "program": "ticket_router", "contributor": GOOD.lower(),
           "inputs": '{"message": "hi"}', "outputs": '{"queue": "sales"}', "feedback": "{}", "expectations": '{"queue": "sales"}'}
    spec = load_project("teleprompt.yaml")[1]["ticket_router"]
    _, quarantined = trace_contract.validate(traces.raw_frame([row]), spec, now_ms=2_000)
    assert quarantined["reason"].to_list() == ["contributor_not_checksummed"]
    assert GOOD not in quarantined["detail"][0] and GOOD.lower() in quarantined["detail"][0]
