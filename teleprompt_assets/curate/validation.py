"""The trace contract's check (DESIGN §3) and the canonical form of a trace.

``validate`` splits raw rows (``traces.RAW_SCHEMA``) into accepted rows and quarantined rows, each
quarantined row with a reason code from ``REASONS``; the two always add up to what was read.

Canonical trace content (the leaf of the attestation's dataRoot): the JSON object with keys
``trace_id, program, contributor, timestamp_ms, inputs, outputs, feedback, expectations``,
serialized with sorted keys, no whitespace, UTF-8, no NaN; ``trace_hash`` is its keccak256.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import polars as pl
from Crypto.Hash import keccak as _Keccak
from eth_utils import is_address, is_checksum_address, keccak

from teleprompt_assets.core.addresses import address_problem, reserved_address_problem
from teleprompt_assets.core.config import MAX_PAYLOAD_CHARS
from teleprompt_assets.core.encoding import canonical_bytes
from teleprompt_assets.ingest.traces import RAW_SCHEMA
from teleprompt_assets.ingest.tracing import CONTRIBUTOR_TAG, PROGRAM_TAG

if TYPE_CHECKING:
    from teleprompt_assets.core.spec import ProgramSpec

CURATED_SCHEMA: dict[str, pl.DataType] = {**RAW_SCHEMA, "trace_hash": pl.String}
QUARANTINE_SCHEMA: dict[str, pl.DataType] = {**RAW_SCHEMA, "reason": pl.String, "detail": pl.String}

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
    return canonical_bytes(content)


def trace_hash(row: Mapping[str, Any]) -> str:
    return "0x" + keccak(canonical_json(row)).hex()


REASONS: dict[str, str] = {
    "duplicate_trace_id": "the trace id was already read in this partition (the earliest row is kept)",
    "trace_error": "the trace did not finish OK",
    "missing_program": f"no {PROGRAM_TAG} tag",
    "program_mismatch": "tagged for another (or an unknown) program",
    "missing_contributor": f"no {CONTRIBUTOR_TAG} tag",
    "invalid_contributor": "the contributor tag is not an Ethereum address",
    "contributor_not_checksummed": "the contributor address is not EIP-55 checksummed",
    "reserved_contributor": "the contributor address is the zero address or a precompile: a reward paid to it burns",
    "future_timestamp": "the trace starts after ingestion time",
    "unreadable_payload": "the spans could not be read from MLflow",
    "malformed_payload": "inputs, outputs or assessments are not (complete) JSON",
    "payload_too_large": "inputs + outputs exceed the size limit",
    "invalid_unicode": "the payload holds text that is not valid Unicode (lone surrogates)",
    "missing_inputs": "a required input field of the program's signature is missing or empty",
    "missing_outputs": "a required output field of the program's signature is missing or empty",
    "invalid_score": "a feedback value is NaN, infinite, out of range or not a number/boolean",
    "no_ground_truth": "the metric needs an expectation for its field and there is none",
    "missing_outcome": "an outcome-only program's metric learns from one feedback name and the trace lacks it",
}


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


@lru_cache(maxsize=65_536)
def _address_problem(address: str | None) -> tuple[str, str] | None:
    if not address:
        return "missing_contributor", f"no {CONTRIBUTOR_TAG} tag"
    if not is_address(address):
        return "invalid_contributor", f"{address[:64]!r} is not an Ethereum address"
    if not is_checksum_address(address):
        return "contributor_not_checksummed", address_problem(address) or f"{address} is not EIP-55 checksummed"
    if reserved := reserved_address_problem(address):
        return "reserved_contributor", reserved
    return None


def _bad_score(value: Any, bounds: tuple[float, float]) -> bool:
    if isinstance(value, bool):
        return False
    return not isinstance(value, (int, float)) or not math.isfinite(value) or not bounds[0] <= value <= bounds[1]


def _check(row: Mapping[str, Any], spec: ProgramSpec, now_ms: int, ranges: Mapping[str, tuple[float, float]],
           max_chars: int) -> tuple[str, str] | bytes:
    """The first contract violation of a row as (reason code, human detail), else its canonical JSON."""
    if row["state"] != "OK":
        return "trace_error", f"trace state is {row['state']}"
    if not row["program"]:
        return "missing_program", f"no {PROGRAM_TAG} tag"
    if row["program"] != spec.name:
        return "program_mismatch", f"tagged {str(row['program'])[:80]!r}, expected {spec.name!r}"
    if problem := _address_problem(row["contributor"]):
        return problem
    if row["timestamp_ms"] is None or row["timestamp_ms"] > now_ms:
        return "future_timestamp", f"timestamp {row['timestamp_ms']} is after ingestion time {now_ms}"
    source = row.get("payload_from") or ""
    if source.startswith("unreadable"):
        return "unreadable_payload", source
    size = len(row["inputs"] or "") + len(row["outputs"] or "")
    if size > max_chars:
        return "payload_too_large", f"inputs + outputs are {size:,} characters (limit {max_chars:,})"
    try:
        inputs = _loads(row["inputs"])
        outputs = None if row["outputs"] is None else _cached_loads(row["outputs"])
        feedback, expectations = _cached_loads(row["feedback"] or "{}"), _cached_loads(row["expectations"] or "{}")
    except (json.JSONDecodeError, TypeError) as exc:
        return "malformed_payload", f"not JSON: {exc}"
    if not isinstance(feedback, dict) or not isinstance(expectations, dict):
        return "malformed_payload", "feedback and expectations must be JSON objects"
    missing_in = [f for f in spec.input_fields if not isinstance(inputs, dict) or inputs.get(f) in (None, "")]
    if missing_in:
        return "missing_inputs", f"missing input field(s) {', '.join(missing_in)}"
    missing_out = [f for f in spec.output_fields if not isinstance(outputs, dict) or outputs.get(f) in (None, "")]
    if missing_out:
        return "missing_outputs", f"missing output field(s) {', '.join(missing_out)}"
    for name, value in feedback.items():
        bounds = ranges.get(name, (0.0, 1.0))
        if _bad_score(value, bounds):
            return "invalid_score", f"feedback {name}={str(value)[:40]!r} is not a number in [{bounds[0]:g}, {bounds[1]:g}] or a boolean"
    metric = spec.config.metric
    if metric.kind in ("exact_match", "token_f1") and expectations.get(metric.field) in (None, ""):
        return "no_ground_truth", f"no expectation for {metric.field!r}; the metric needs it"
    if metric.kind == "outcome_model" and feedback.get(metric.outcome) is None:
        return "missing_outcome", f"no {metric.outcome!r} feedback; the outcome model learns from it"
    try:
        # Same bytes as canonical_bytes(content) (top-level keys in sorted order), with the repeated
        # parts (outputs, feedback, expectations) serialized once per distinct value.
        return b"".join((
            b'{"contributor":', _canon_tag(row["contributor"]), b',"expectations":', _cached_canon(row["expectations"] or "{}"),
            b',"feedback":', _cached_canon(row["feedback"] or "{}"), b',"inputs":', canonical_bytes(inputs),
            b',"outputs":', _cached_canon(row["outputs"]), b',"program":', _canon_tag(row["program"]),
            b',"timestamp_ms":', b"%d" % row["timestamp_ms"], b',"trace_id":', _encode_string(row["trace_id"]).encode("utf-8"), b"}",
        ))
    except UnicodeEncodeError as exc:
        return "invalid_unicode", f"cannot encode as UTF-8: {exc.reason} at {exc.start}"
    except ValueError as exc:
        return "malformed_payload", f"not canonical JSON: {exc}"


_encode_string = json.encoder.encode_basestring  # a JSON string literal, non-ASCII kept (as ensure_ascii=False)


_canon_tag = lru_cache(maxsize=65_536)(canonical_bytes)


@lru_cache(maxsize=65_536)
def _cached_loads(text: str) -> Any:
    return json.loads(text)


@lru_cache(maxsize=65_536)
def _cached_canon(text: str) -> bytes:
    return canonical_bytes(json.loads(text))


try:  # safe-pysha3's C keccak is ~4x faster than pycryptodome's for trace-sized inputs
    from sha3 import keccak_256 as _keccak_256

    def _keccak256(data: bytes) -> str:
        return _keccak_256(data).hexdigest()
except ImportError:  # pragma: no cover - the dependency is declared; this keeps the module importable without it
    def _keccak256(data: bytes) -> str:
        return _Keccak.new(data=data, digest_bits=256).hexdigest()


def validate(raw: pl.DataFrame, spec: ProgramSpec, now_ms: int, *, score_ranges: Mapping[str, tuple[float, float]] | None = None,
             max_payload_chars: int = MAX_PAYLOAD_CHARS) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split raw rows into (curated, quarantine). ``len(curated) + len(quarantine) == len(raw)``.

    Feedback values must be booleans or finite numbers within ``score_ranges[name]`` (default [0, 1]).
    Curated rows gain ``trace_hash``; quarantined rows keep every raw column plus ``reason``/``detail``.
    """
    ranges = dict(score_ranges or {})
    raw = raw.select([pl.col(c).cast(t) if c in raw.columns else pl.lit(None, t).alias(c) for c, t in RAW_SCHEMA.items()])
    raw = raw.sort("timestamp_ms", "trace_id", nulls_last=True, maintain_order=True)
    first = raw.select(pl.col("trace_id").is_first_distinct()).to_series().to_list()
    reasons: list[str | None] = []
    details: list[str | None] = []
    hashes: list[str | None] = []
    for row, is_first in zip(raw.iter_rows(named=True), first, strict=True):
        result = _check(row, spec, now_ms, ranges, max_payload_chars) if is_first else ("duplicate_trace_id", "trace id already read in this partition")
        if isinstance(result, bytes):
            reasons.append(None), details.append(None), hashes.append("0x" + _keccak256(result))
        else:
            reasons.append(result[0]), details.append(result[1]), hashes.append(None)
    marked = raw.with_columns(pl.Series("reason", reasons, pl.String), pl.Series("detail", details, pl.String), pl.Series("trace_hash", hashes, pl.String))
    accepted = marked.filter(pl.col("reason").is_null()).select(list(CURATED_SCHEMA))
    rejected = marked.filter(pl.col("reason").is_not_null()).select(list(QUARANTINE_SCHEMA))
    return accepted, rejected
