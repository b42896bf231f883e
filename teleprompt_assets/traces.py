"""Reading labeled traces from MLflow and validating them against the trace contract (DESIGN §3).

``raw`` rows keep what MLflow holds, as JSON text, so nothing is lost even when a trace is broken.
``validate`` splits them into accepted rows and quarantined rows, each quarantined row with a
reason code; the two always add up to what was read.

Canonical trace content (the leaf of the attestation's dataRoot): the JSON object with keys
``trace_id, program, contributor, timestamp_ms, inputs, outputs, feedback, expectations``,
serialized with sorted keys, no whitespace, UTF-8, no NaN; ``trace_hash`` is its keccak256.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

import polars as pl
from eth_utils import is_address, is_checksum_address, keccak, to_checksum_address
from mlflow import MlflowClient
from mlflow.entities import Trace

from teleprompt_assets.contract import CONTRIBUTOR_TAG, PROGRAM_TAG
from teleprompt_assets.programs import ProgramSpec

RAW_SCHEMA: dict[str, pl.DataType] = {
    "trace_id": pl.String,
    "timestamp_ms": pl.Int64,
    "state": pl.String,
    "experiment_id": pl.String,
    "program": pl.String,
    "contributor": pl.String,
    "inputs": pl.String,
    "outputs": pl.String,
    "feedback": pl.String,
    "expectations": pl.String,
}
CURATED_SCHEMA: dict[str, pl.DataType] = {**RAW_SCHEMA, "trace_hash": pl.String}
QUARANTINE_SCHEMA: dict[str, pl.DataType] = {**RAW_SCHEMA, "reason": pl.String, "detail": pl.String}
PAGE_SIZE = 500


def read_traces(client: MlflowClient, experiment_id: str, start_ms: int, end_ms: int) -> Iterator[Trace]:
    """Every trace whose start falls in [start_ms, end_ms), page by page, with spans (full payloads)."""
    query = f"trace.timestamp_ms >= {start_ms} AND trace.timestamp_ms < {end_ms}"
    token = None
    while True:
        page = client.search_traces(locations=[experiment_id], filter_string=query, max_results=PAGE_SIZE, page_token=token, order_by=["timestamp_ms ASC"])
        yield from page
        token = page.token
        if not token:
            return


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _assessments(trace: Trace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Latest valid value per feedback and expectation name; overridden assessments lose."""
    feedback: dict[str, Any] = {}
    expectations: dict[str, Any] = {}
    ordered = sorted(trace.info.assessments or [], key=lambda a: (a.last_update_time_ms or 0, a.assessment_id or ""))
    for assessment in ordered:
        if assessment.valid is False:
            continue
        if assessment.feedback is not None and assessment.feedback.error is None:
            feedback[assessment.name] = assessment.feedback.value
        elif assessment.expectation is not None:
            expectations[assessment.name] = assessment.expectation.value
    return feedback, expectations


def raw_record(trace: Trace) -> dict[str, Any]:
    info = trace.info
    root = next((s for s in trace.data.spans if s.parent_id is None), None) if trace.data else None
    feedback, expectations = _assessments(trace)
    return {
        "trace_id": info.trace_id,
        "timestamp_ms": info.request_time,
        "state": str(getattr(info.state, "value", info.state)),
        "experiment_id": getattr(info.trace_location.mlflow_experiment, "experiment_id", None) if info.trace_location else None,
        "program": info.tags.get(PROGRAM_TAG),
        "contributor": info.tags.get(CONTRIBUTOR_TAG),
        "inputs": _json(root.inputs) if root is not None else None,
        "outputs": _json(root.outputs) if root is not None else None,
        "feedback": _json(feedback),
        "expectations": _json(expectations),
    }


def raw_frame(records: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(records, schema=RAW_SCHEMA)


def canonical_json(row: Mapping[str, Any]) -> bytes:
    content = {
        "trace_id": row["trace_id"],
        "program": row["program"],
        "contributor": row["contributor"],
        "timestamp_ms": row["timestamp_ms"],
        "inputs": json.loads(row["inputs"]),
        "outputs": json.loads(row["outputs"]),
        "feedback": json.loads(row["feedback"]),
        "expectations": json.loads(row["expectations"]),
    }
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def trace_hash(row: Mapping[str, Any]) -> str:
    return "0x" + keccak(canonical_json(row)).hex()


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _problem(row: Mapping[str, Any], spec: ProgramSpec, now_ms: int) -> tuple[str, str] | None:
    """The first contract violation of a row, as (reason code, human detail), or None."""
    if row["state"] != "OK":
        return "trace_error", f"trace state is {row['state']}"
    if not row["program"]:
        return "missing_program", f"no {PROGRAM_TAG} tag"
    if row["program"] != spec.name:
        return "program_mismatch", f"tagged {row['program']!r}, expected {spec.name!r}"
    address = row["contributor"]
    if not address:
        return "missing_contributor", f"no {CONTRIBUTOR_TAG} tag"
    if not is_address(address):
        return "invalid_contributor", f"{address[:64]!r} is not an Ethereum address"
    if not is_checksum_address(address):
        return "contributor_not_checksummed", f"{address} is not EIP-55 checksummed ({to_checksum_address(address)})"
    if row["timestamp_ms"] is None or row["timestamp_ms"] > now_ms:
        return "future_timestamp", f"timestamp {row['timestamp_ms']} is after ingestion time {now_ms}"
    try:
        inputs, outputs = _loads(row["inputs"]), _loads(row["outputs"])
    except json.JSONDecodeError as exc:
        return "malformed_payload", f"inputs/outputs are not JSON: {exc}"
    missing_in = [f for f in spec.input_fields if not isinstance(inputs, dict) or inputs.get(f) in (None, "")]
    if missing_in:
        return "missing_inputs", f"missing input field(s) {', '.join(missing_in)}"
    missing_out = [f for f in spec.output_fields if not isinstance(outputs, dict) or outputs.get(f) in (None, "")]
    if missing_out:
        return "missing_outputs", f"missing output field(s) {', '.join(missing_out)}"
    for name, value in json.loads(row["feedback"]).items():
        if isinstance(value, bool):
            continue
        if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= 1:
            return "invalid_score", f"feedback {name}={value!r} is not a number in [0, 1] or a boolean"
    field = spec.config.metric.field
    if spec.config.metric.kind != "function" and json.loads(row["expectations"]).get(field) in (None, ""):
        return "no_ground_truth", f"no expectation for {field!r}; the metric needs it"
    return None


def validate(raw: pl.DataFrame, spec: ProgramSpec, now_ms: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split raw rows into (curated, quarantine). ``len(curated) + len(quarantine) == len(raw)``."""
    accepted: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    seen: set[str] = set()
    for row in raw.sort("timestamp_ms", "trace_id", nulls_last=True).iter_rows(named=True):
        problem = ("duplicate_trace_id", "trace id already read in this partition") if row["trace_id"] in seen else _problem(row, spec, now_ms)
        seen.add(row["trace_id"])
        if problem:
            rejected.append({**row, "reason": problem[0], "detail": problem[1]})
        else:
            accepted.append({**row, "trace_hash": trace_hash(row)})
    return pl.DataFrame(accepted, schema=CURATED_SCHEMA), pl.DataFrame(rejected, schema=QUARANTINE_SCHEMA)


def day_bounds_ms(day: str) -> tuple[int, int]:
    from datetime import date, datetime, time, timedelta, timezone

    start = datetime.combine(date.fromisoformat(day), time(0), tzinfo=timezone.utc)
    return int(start.timestamp() * 1000), int((start + timedelta(days=1)).timestamp() * 1000)


def read_day(client: MlflowClient, experiment_id: str, day: str) -> pl.DataFrame:
    """One UTC day of an experiment's traces as a raw table."""
    start, end = day_bounds_ms(day)
    return raw_frame([raw_record(t) for t in read_traces(client, experiment_id, start, end)])


def count_by_day(client: MlflowClient, experiment_id: str, days: list[str]) -> dict[str, int]:
    """Traces per UTC day, reading metadata only (no spans): cheap enough for a sensor tick."""
    counts = {}
    for day in days:
        start, end = day_bounds_ms(day)
        query = f"trace.timestamp_ms >= {start} AND trace.timestamp_ms < {end}"
        total, token = 0, None
        while True:
            page = client.search_traces(locations=[experiment_id], filter_string=query, max_results=PAGE_SIZE, page_token=token, include_spans=False)
            total += len(page)
            token = page.token
            if not token:
                break
        counts[day] = total
    return counts
