"""The trace contract's check (docs/architecture.md#trace-contract) and the canonical form of a trace.

``validate`` splits raw rows (``traces.RAW_SCHEMA``) into accepted rows and quarantined rows, each
quarantined row with a reason code from ``REASONS``; the two always add up to what was read.

Canonical trace content (the leaf of the attestation's dataRoot): the JSON object with keys
``trace_id, program, contributor, timestamp_ms, inputs, outputs, feedback, expectations``,
serialized with sorted keys, no whitespace, UTF-8, no NaN; ``trace_hash`` is its keccak256.

Identity (docs/security.md#identity): with a ``trust:`` policy, a trace counts only when a registered
app key signed it (``core/identity.py``), and its program, contributor and start time are the signed
ones, whatever the tags say now; its feedback and expectations are the latest labels signed by a
registered labeller. Without a policy the tags and the latest valid labels are taken as read.
"""

from __future__ import annotations

import io
import json
import math
from collections import Counter
from collections.abc import Mapping
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import polars as pl
from eth_utils import is_address, is_checksum_address

from teleprompt_assets.core import identity
from teleprompt_assets.core.addresses import address_problem, reserved_address_problem
from teleprompt_assets.core.config import MAX_PAYLOAD_CHARS, TrustPolicy
from teleprompt_assets.core.encoding import JsonTooDeep, canonical_bytes, loads_bounded
from teleprompt_assets.ingest import traces
from teleprompt_assets.ingest.traces import IDENTITY_COLUMNS, MAX_PAYLOAD_DEPTH, RAW_SCHEMA
from teleprompt_assets.ingest.tracing import CONTRIBUTOR_TAG, PROGRAM_TAG, SIGNATURE_TAG

if TYPE_CHECKING:
    from teleprompt_assets.core.spec import ProgramSpec

CURATED_SCHEMA: dict[str, pl.DataType] = {**{k: v for k, v in RAW_SCHEMA.items() if k not in IDENTITY_COLUMNS}, "trace_hash": pl.String}
"""Accepted rows: the raw columns but the signature evidence (checked, and folded into program,
contributor, timestamp, feedback and expectations), plus ``trace_hash``."""
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
    return "0x" + identity.keccak256(canonical_json(row)).hex()


REASONS: dict[str, str] = {
    "duplicate_trace_id": "the trace id was already read in this partition (the earliest row is kept)",
    "trace_error": "the trace did not finish OK",
    "unsigned": f"no {SIGNATURE_TAG} tag while trust.unsigned is quarantine: no registered app vouches for the trace",
    "bad_signature": "the signature tag is malformed or unrecoverable, was copied from another trace, or the payload differs from what was signed",
    "unknown_signer": "the signature recovers to an address that is not a registered app signer (another key, or fields changed after signing)",
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
    "payload_too_deep": f"inputs or outputs are nested deeper than {MAX_PAYLOAD_DEPTH} levels",
    "invalid_unicode": "the payload holds text that is not valid Unicode (lone surrogates)",
    "missing_inputs": "a required input field of the program's signature is missing or empty",
    "missing_outputs": "a required output field of the program's signature is missing or empty",
    "invalid_score": "a feedback value is NaN, infinite, out of range or not a number/boolean",
    "no_ground_truth": "the metric needs an expectation for its field and there is none",
    "missing_outcome": "an outcome-only program's metric learns from one feedback name and the trace lacks it",
}


def _loads(text: str | None) -> Any:
    return None if text is None else loads_bounded(text, max_depth=MAX_PAYLOAD_DEPTH)


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
           max_chars: int, signed: tuple[str, str] | None = None) -> tuple[str, str] | bytes:
    """The first contract violation of a row as (reason code, human detail), else its canonical JSON.

    ``signed``: the (inputs, outputs) payload hashes the app signed, checked against the payloads last.
    """
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
    except JsonTooDeep:
        return "payload_too_deep", f"inputs, outputs or assessments nested deeper than {MAX_PAYLOAD_DEPTH} levels"
    except (ValueError, TypeError) as exc:
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
        inputs_c, outputs_c = canonical_bytes(inputs), _cached_canon(row["outputs"])
        # Same bytes as canonical_bytes(content) (top-level keys in sorted order), with the repeated
        # parts (outputs, feedback, expectations) serialized once per distinct value.
        content = b"".join((
            b'{"contributor":', _canon_tag(row["contributor"]), b',"expectations":', _cached_canon(row["expectations"] or "{}"),
            b',"feedback":', _cached_canon(row["feedback"] or "{}"), b',"inputs":', inputs_c,
            b',"outputs":', outputs_c, b',"program":', _canon_tag(row["program"]),
            b',"timestamp_ms":', b"%d" % row["timestamp_ms"], b',"trace_id":', _encode_string(row["trace_id"]).encode("utf-8"), b"}",
        ))
    except UnicodeEncodeError as exc:
        return "invalid_unicode", f"cannot encode as UTF-8: {exc.reason} at {exc.start}"
    except ValueError as exc:
        return "malformed_payload", f"not canonical JSON: {exc}"
    if signed is not None:
        hashes = ("0x" + _keccak256(inputs_c), "0x" + _keccak256(outputs_c))
        if hashes != signed:
            return "bad_signature", f"the {'inputs' if hashes[0] != signed[0] else 'outputs'} differ from what the app signed"
    return content


_encode_string = json.encoder.encode_basestring  # a JSON string literal, non-ASCII kept (as ensure_ascii=False)


_canon_tag = lru_cache(maxsize=65_536)(canonical_bytes)


@lru_cache(maxsize=65_536)
def _cached_loads(text: str) -> Any:
    return loads_bounded(text, max_depth=MAX_PAYLOAD_DEPTH)


@lru_cache(maxsize=65_536)
def _cached_canon(text: str) -> bytes:
    return canonical_bytes(_cached_loads(text))


def _keccak256(data: bytes) -> str:
    return identity.keccak256(data).hex()  # safe-pysha3's C keccak, ~4x faster than pycryptodome's for trace-sized inputs


# --- identity: who vouches for the trace and its labels (docs/security.md#identity) ------------------

@dataclass
class Vouched:
    """A raw row as its signatures vouch for it, or why they do not."""

    row: dict[str, Any]
    problem: tuple[str, str] | None = None
    signed: tuple[str, str] | None = None  # the payload hashes the app signed


def _signer(digest: bytes, signature: Any, expected: frozenset[str], seen: dict[tuple[bytes, str, frozenset[str]], str] | None) -> str:
    """:func:`identity.signer_of`, checked once per distinct (digest, signature, expected) of a table
    (``seen``): a pair met again gets the first answer, or the same refusal, without a second check."""
    if seen is None or not isinstance(signature, str):
        return identity.signer_of(digest, signature, expected)
    key = (digest, signature, expected)
    found = seen.get(key)
    if found is None:
        try:
            found = identity.signer_of(digest, signature, expected)
        except identity.BadSignature as exc:
            found = _REFUSED + str(exc)
        seen[key] = found
    if found.startswith(_REFUSED):
        raise identity.BadSignature(found.removeprefix(_REFUSED))
    return found


_REFUSED = "\x00refused: "  # never the start of an address


def _labels(logged: list[Any], trace_id: str, labellers: frozenset[str], notes: Counter[str],
            seen: dict[tuple[bytes, str, frozenset[str]], str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Feedback and expectations from the labels a registered labeller signed for this trace: per
    name the one signed last (ties: the larger signature, any fixed rule will do). MLflow's own
    ``valid`` flag is not consulted: whoever can write the store can override an assessment."""
    latest: dict[tuple[str, str], tuple[int, str, Any]] = {}
    for item in logged:
        if not isinstance(item, dict) or item.get("kind") not in ("feedback", "expectation") or not isinstance(item.get("name"), str):
            notes["labels_unauthorised"] += 1
            continue
        if not item.get("signature"):
            notes["labels_unsigned"] += 1
            continue
        time_ms = identity.signed_time(item.get("signed_ms"))
        try:
            if time_ms is None:
                raise identity.BadSignature("no signed time")
            label = identity.LabelClaim(trace_id, item["kind"], item["name"], identity.label_value(item.get("value")), time_ms)
            signer = _signer(identity.label_digest(label), item["signature"], labellers, seen)
        except (identity.BadSignature, ValueError, TypeError):
            signer = None
        if signer not in labellers:
            notes["labels_unauthorised"] += 1
            continue
        notes["labels_counted"] += 1
        key = (item["kind"], item["name"])
        if key not in latest or (time_ms, item["signature"]) > latest[key][:2]:
            latest[key] = (time_ms, item["signature"], item.get("value"))
    feedback = {name: v[2] for (kind, name), v in sorted(latest.items()) if kind == "feedback"}
    expectations = {name: v[2] for (kind, name), v in sorted(latest.items()) if kind == "expectation"}
    return feedback, expectations


def _signed_claim(row: Mapping[str, Any], policy: TrustPolicy,
                  seen: dict[tuple[bytes, str, frozenset[str]], str] | None = None) -> tuple[str, str] | identity.TraceClaim | None:
    """The trace's claim when a registered app key signed it for this trace; None for an unsigned trace
    the policy accepts; else the identity reason (code, detail) it is quarantined for."""
    text = row.get("claim")
    if not text:
        return None if policy.unsigned == "accept" else ("unsigned", f"no {SIGNATURE_TAG} tag: no registered app vouches for this trace")
    try:
        claim, signature = identity.parse_claim(text)
        signer = _signer(identity.claim_digest(claim), signature, policy.signers, seen)
    except identity.BadSignature as exc:
        return "bad_signature", str(exc)
    if claim.trace_id != row["trace_id"]:
        return "bad_signature", f"signed for trace {claim.trace_id[:80]!r}, not this one: a copied signature"
    if signer not in policy.signers:
        return "unknown_signer", f"recovers to {signer}, not a registered app signer (another key, or fields changed after signing)"
    return claim


def vouch(row: dict[str, Any], policy: TrustPolicy, notes: Counter[str], seen: dict[tuple[bytes, str, frozenset[str]], str] | None = None) -> Vouched:
    """``row`` with the program, contributor and start time its app signed and the labels its
    labellers signed, or the identity reason it is quarantined for. ``notes`` counts what was
    believed, ignored or found changed (the day's ``identity`` metadata); ``seen`` remembers the
    signatures already checked (see :func:`_signer`)."""
    claim = _signed_claim(row, policy, seen)
    if claim is None:
        notes["unsigned_accepted"] += 1
        return Vouched(row)
    if isinstance(claim, tuple):
        return Vouched(row, claim)
    notes["signed"] += 1
    if (row["program"], row["contributor"]) != (claim.program, claim.contributor):
        notes["retagged"] += 1
    if row["timestamp_ms"] != claim.start_ms:
        notes["time_moved"] += 1
    try:
        logged = loads_bounded(row.get("assessments") or "[]", max_depth=MAX_PAYLOAD_DEPTH)
    except ValueError:
        return Vouched(row, _unreadable_labels())
    feedback, expectations = _labels(logged if isinstance(logged, list) else [None], claim.trace_id, policy.labellers, notes, seen)
    vouched = row | {"program": claim.program, "contributor": claim.contributor, "timestamp_ms": claim.start_ms,
                     "feedback": _RAW_JSON.encode(feedback), "expectations": _RAW_JSON.encode(expectations)}
    return Vouched(vouched, signed=(claim.inputs_hash, claim.outputs_hash))


VOUCH_IN_WORKERS_FROM = 30_000
VOUCH_ROWS_PER_PROCESS = 5_000
"""A table of ``VOUCH_IN_WORKERS_FROM`` rows or more is vouched for in worker processes, one per
``VOUCH_ROWS_PER_PROCESS`` rows at most. A row costs ~170 µs on one core here (~100 µs of it the
~26 µs libsecp256k1 checks of its claim and ~2.7 labels); starting the workers, where this process
has not yet (a Dagster step that did not read), costs ~2 s, which a smaller table would not win back
on two cores. Shipping rows both ways costs ~0.1 s per 100,000."""
_VOUCH_IN = ("trace_id", "state", "program", "contributor", "timestamp_ms", "feedback", "expectations", "claim", "assessments")
_VOUCHED: dict[str, pl.DataType] = {"program": pl.String, "contributor": pl.String, "timestamp_ms": pl.Int64, "feedback": pl.String,
                                    "expectations": pl.String, "reason": pl.String, "detail": pl.String, "inputs_hash": pl.String,
                                    "outputs_hash": pl.String}


def vouch_frame(frame: pl.DataFrame, policy: TrustPolicy) -> tuple[pl.DataFrame, Counter[str]]:
    """:func:`vouch` for every row of ``frame`` (raw columns, at least ``_VOUCH_IN``), in order: one
    row per row with the program, contributor, start time, feedback and expectations to curate on
    (as signed, or as read where nothing was vouched for), the identity problem (reason, detail) if
    any, and the payload hashes the app signed; and the identity counts. Each distinct signature of
    the frame is checked once."""
    notes: Counter[str] = Counter()
    seen: dict[tuple[bytes, str, frozenset[str]], str] = {}
    out: dict[str, list[Any]] = {name: [] for name in _VOUCHED}
    for row in frame.select(_VOUCH_IN).iter_rows(named=True):
        own = vouch(row, policy, notes, seen) if row["state"] == "OK" else Vouched(row)
        for name in ("program", "contributor", "timestamp_ms", "feedback", "expectations"):
            out[name].append(own.row[name])
        reason, detail = own.problem or (None, None)
        inputs_hash, outputs_hash = own.signed or (None, None)
        out["reason"].append(reason), out["detail"].append(detail), out["inputs_hash"].append(inputs_hash), out["outputs_hash"].append(outputs_hash)
    return pl.DataFrame(out, schema=_VOUCHED), notes


def _vouch_job(frame_ipc: bytes, policy: TrustPolicy) -> tuple[bytes, dict[str, int]]:
    """Worker-process entry point: :func:`vouch_frame` of one slice, shipped as Arrow IPC both ways."""
    vouched, notes = vouch_frame(pl.read_ipc(io.BytesIO(frame_ipc)), policy)
    sink = io.BytesIO()
    vouched.write_ipc(sink)
    return sink.getvalue(), dict(notes)


def vouch_table(raw: pl.DataFrame, policy: TrustPolicy, processes: int | None = None) -> tuple[pl.DataFrame, Counter[str]]:
    """:func:`vouch_frame` of the whole table, in slices across the ingestion worker processes
    (``ingest.traces.worker_pool``, ``processes`` of them, default ``TELEPROMPT_INGEST_PROCESSES`` or
    the CPUs) when the table is large enough (``VOUCH_IN_WORKERS_FROM``), else here. Every row is
    vouched for by the same code either way, and the rows come back in order: the output does not
    depend on the slicing. A slice whose worker died is vouched for here."""
    workers = min(processes or traces.default_processes(), raw.height // VOUCH_ROWS_PER_PROCESS)
    if workers <= 1 or raw.height < VOUCH_IN_WORKERS_FROM:
        return vouch_frame(raw, policy)
    frame = raw.select(_VOUCH_IN)
    step = -(-frame.height // (workers * 4))  # a few slices per worker, so a slow one does not hold up the rest
    slices = [frame.slice(at, step) for at in range(0, frame.height, step)]
    pool = traces.worker_pool(workers)
    jobs = []
    for part in slices:
        sink = io.BytesIO()
        part.write_ipc(sink)
        jobs.append(pool.submit(_vouch_job, sink.getvalue(), policy))
    frames: list[pl.DataFrame] = []
    notes: Counter[str] = Counter()
    for part, job in zip(slices, jobs, strict=True):
        try:
            shipped, counted = job.result()
            frames.append(pl.read_ipc(io.BytesIO(shipped)))
            notes.update(counted)
        except BrokenProcessPool:
            traces.forget_pool(workers)
            vouched, counted = vouch_frame(part, policy)
            frames.append(vouched)
            notes.update(counted)
    return pl.concat(frames, how="vertical"), notes


def _unreadable_labels() -> tuple[str, str]:
    return "malformed_payload", "the assessments are not readable JSON"


_RAW_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)  # as ingest writes them


def identity_statement(policy: TrustPolicy | None) -> str:
    """One line for a run's metadata: what the day's contributors, times and labels rest on."""
    if policy is None:
        return ("unverified: no trust section in teleprompt.yaml, so contributor tags, start times and labels rest on write access "
                "to the tracking store (docs/security.md#identity)")
    demo = " - includes the public DEMO app key, which anyone can sign with: for demos and tests only" if identity.DEMO_APP_ADDRESS in policy.signers | policy.labellers else ""
    return (f"verified: traces signed by {len(policy.signers)} registered app key(s), labels by {len(policy.labellers)} labeller key(s), "
            f"unsigned traces {'quarantined' if policy.unsigned == 'quarantine' else 'accepted on their tags'}{demo}")


@dataclass
class Checked:
    """What :func:`check` found: accepted and quarantined rows, and the identity counts of the day."""

    accepted: pl.DataFrame
    quarantined: pl.DataFrame
    identity: dict[str, int] = field(default_factory=dict)


def check(raw: pl.DataFrame, spec: ProgramSpec, now_ms: int, *, trust: TrustPolicy | None = None,
          score_ranges: Mapping[str, tuple[float, float]] | None = None, max_payload_chars: int = MAX_PAYLOAD_CHARS) -> Checked:
    """Split raw rows into accepted and quarantined ones. ``len(accepted) + len(quarantined) == len(raw)``.

    With ``trust``, each trace is first vouched for (:func:`vouch`): rows are then ordered, deduplicated
    and checked on the signed program, contributor, start time and labels. Feedback values must be
    booleans or finite numbers within ``score_ranges[name]`` (default [0, 1]). Accepted rows gain
    ``trace_hash``; quarantined rows keep every raw column plus ``reason``/``detail``.
    """
    ranges = dict(score_ranges or {})
    raw = raw.select([pl.col(c).cast(t) if c in raw.columns else pl.lit(None, t).alias(c) for c, t in RAW_SCHEMA.items()])
    notes: Counter[str] = Counter()
    problems: list[tuple[str, str] | None] = []
    signed: list[tuple[str, str] | None] = []
    if trust is not None and raw.height:
        vouched, notes = vouch_table(raw, trust)
        raw = raw.with_columns(vouched.select("program", "contributor", "timestamp_ms", "feedback", "expectations"))
        problems = [None if reason is None else (reason, detail) for reason, detail in vouched.select("reason", "detail").iter_rows()]
        signed = [None if i is None else (i, o) for i, o in vouched.select("inputs_hash", "outputs_hash").iter_rows()]
    raw = raw.with_row_index("_i").sort("timestamp_ms", "trace_id", nulls_last=True, maintain_order=True)
    first = raw.select(pl.col("trace_id").is_first_distinct()).to_series().to_list()
    reasons: list[str | None] = []
    details: list[str | None] = []
    hashes: list[str | None] = []
    for row, is_first in zip(raw.iter_rows(named=True), first, strict=True):
        problem, own = (problems[row["_i"]], signed[row["_i"]]) if problems else (None, None)
        result = (problem or _check(row, spec, now_ms, ranges, max_payload_chars, own)) if is_first else ("duplicate_trace_id", "trace id already read in this partition")
        if isinstance(result, bytes):
            reasons.append(None), details.append(None), hashes.append("0x" + _keccak256(result))
        else:
            reasons.append(result[0]), details.append(result[1]), hashes.append(None)
    marked = raw.with_columns(pl.Series("reason", reasons, pl.String), pl.Series("detail", details, pl.String), pl.Series("trace_hash", hashes, pl.String))
    accepted = marked.filter(pl.col("reason").is_null()).select(list(CURATED_SCHEMA))
    rejected = marked.filter(pl.col("reason").is_not_null()).select(list(QUARANTINE_SCHEMA))
    return Checked(accepted, rejected, dict(sorted(notes.items())))


def validate(raw: pl.DataFrame, spec: ProgramSpec, now_ms: int, *, trust: TrustPolicy | None = None,
             score_ranges: Mapping[str, tuple[float, float]] | None = None, max_payload_chars: int = MAX_PAYLOAD_CHARS) -> tuple[pl.DataFrame, pl.DataFrame]:
    """:func:`check`'s (accepted, quarantined)."""
    checked = check(raw, spec, now_ms, trust=trust, score_ranges=score_ranges, max_payload_chars=max_payload_chars)
    return checked.accepted, checked.quarantined
