"""Reading labeled traces from MLflow and validating them against the trace contract (DESIGN §3).

``raw`` rows keep what MLflow holds, as JSON text, so nothing is lost even when a trace is broken.
``validate`` splits them into accepted rows and quarantined rows, each quarantined row with a
reason code; the two always add up to what was read.

Canonical trace content (the leaf of the attestation's dataRoot): the JSON object with keys
``trace_id, program, contributor, timestamp_ms, inputs, outputs, feedback, expectations``,
serialized with sorted keys, no whitespace, UTF-8, no NaN; ``trace_hash`` is its keccak256.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import multiprocessing
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import polars as pl
from Crypto.Hash import keccak as _Keccak
from eth_utils import is_address, is_checksum_address, keccak, to_checksum_address
from mlflow import MlflowClient
from mlflow.entities import Trace, TraceInfo

from teleprompt_assets.contract import CONTRIBUTOR_TAG, PROGRAM_TAG

if TYPE_CHECKING:
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
    "source": pl.String,
    "payload_from": pl.String,
}
"""One row per trace. ``inputs``/``outputs`` are the root span's full payloads as JSON text;
``feedback`` maps each outcome metric to its latest valid value; ``expectations`` likewise;
``source`` holds MLflow's source metadata (``mlflow.source.*``, ``mlflow.user``, trace size) as
JSON; ``payload_from`` says whether the payloads came from the trace preview (complete, not cut)
or from the spans."""
CURATED_SCHEMA: dict[str, pl.DataType] = {**RAW_SCHEMA, "trace_hash": pl.String}
QUARANTINE_SCHEMA: dict[str, pl.DataType] = {**RAW_SCHEMA, "reason": pl.String, "detail": pl.String}
PAGE_SIZE = 500
PREVIEW_LIMIT = 1000  # MLflow OSS cuts request/response previews longer than this to 997 chars + "..."
METADATA_INPUTS = "mlflow.traceInputs"
METADATA_OUTPUTS = "mlflow.traceOutputs"
METADATA_LIMIT = 250  # MLflow cuts trace metadata values longer than this
SOURCE_KEYS = ("mlflow.source.name", "mlflow.source.type", "mlflow.source.git.commit", "mlflow.user", "mlflow.trace.sizeBytes")


def _window_filter(start_ms: int, end_ms: int) -> str:
    return f"trace.timestamp_ms >= {int(start_ms)} AND trace.timestamp_ms < {int(end_ms)}"


def read_traces(client: MlflowClient, experiment_id: str, start_ms: int, end_ms: int, include_spans: bool = True,
                page_size: int = PAGE_SIZE) -> Iterator[Trace]:
    """Every trace whose start falls in [start_ms, end_ms), page by page."""
    token = None
    while True:
        page = client.search_traces(locations=[experiment_id], filter_string=_window_filter(start_ms, end_ms), max_results=page_size,
                                    page_token=token, order_by=["timestamp_ms ASC"], include_spans=include_spans)
        yield from page
        token = page.token
        if not token:
            return


_RAW_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def _json(value: Any) -> str:
    return _RAW_JSON.encode(value)


def _assessments(trace: Trace | TraceInfo) -> tuple[dict[str, Any], dict[str, Any]]:
    """Latest valid value per feedback and expectation name; overridden (invalid) and errored assessments lose."""
    info = trace.info if isinstance(trace, Trace) else trace
    feedback: dict[str, Any] = {}
    expectations: dict[str, Any] = {}
    ordered = sorted(info.assessments or [], key=lambda a: (a.last_update_time_ms or 0, a.assessment_id or ""))
    for assessment in ordered:
        if assessment.valid is False:
            continue
        if assessment.feedback is not None and assessment.feedback.error is None:
            feedback[assessment.name] = assessment.feedback.value
        elif assessment.expectation is not None:
            expectations[assessment.name] = assessment.expectation.value
    return feedback, expectations


def _base_record(info: TraceInfo) -> dict[str, Any]:
    feedback, expectations = _assessments(info)
    meta = info.trace_metadata or {}
    return {
        "trace_id": info.trace_id,
        "timestamp_ms": info.request_time,
        "state": str(getattr(info.state, "value", info.state)),
        "experiment_id": getattr(info.trace_location.mlflow_experiment, "experiment_id", None) if info.trace_location else None,
        "program": info.tags.get(PROGRAM_TAG),
        "contributor": info.tags.get(CONTRIBUTOR_TAG),
        "inputs": None,
        "outputs": None,
        "feedback": _json(feedback),
        "expectations": _json(expectations),
        "source": _json({k: meta[k] for k in SOURCE_KEYS if k in meta}),
        "payload_from": None,
    }


def raw_record(trace: Trace) -> dict[str, Any]:
    """A row from a trace read with its spans: payloads are the root span's inputs and outputs."""
    root = next((s for s in trace.data.spans if s.parent_id is None), None) if trace.data else None
    return _base_record(trace.info) | {
        "inputs": _json(root.inputs) if root is not None else None,
        "outputs": _json(root.outputs) if root is not None else None,
        "payload_from": "spans",
    }


def _complete_preview(preview: str | None, metadata: str | None) -> str | None:
    """The preview re-serialized when it provably holds the whole root-span payload, else None.

    MLflow stores the root span's JSON as the preview, cut to 997 chars + "..." when longer than
    1,000, and replaced by the last chat message's text for chat-shaped payloads. So a preview is
    complete when it is shorter than the limit, parses as a JSON object, and agrees with the
    (separately cut, 250 chars) ``mlflow.traceInputs``/``traceOutputs`` metadata, which is always the
    raw JSON: a chat-extracted preview never matches it.
    """
    if preview is None or metadata is None or len(preview) >= PREVIEW_LIMIT:
        return None
    if len(metadata) <= METADATA_LIMIT - 3 and metadata != preview:
        return None
    if not preview.startswith(metadata[: METADATA_LIMIT - 3]):
        return None
    try:
        value = json.loads(preview)
    except ValueError:
        return None
    return _json(value) if isinstance(value, dict) else None


def preview_record(info: TraceInfo) -> tuple[dict[str, Any], bool]:
    """A row from trace metadata alone, and whether its payloads are complete (no span read needed)."""
    meta = info.trace_metadata or {}
    record = _base_record(info)
    inputs = _complete_preview(info.request_preview, meta.get(METADATA_INPUTS))
    outputs = _complete_preview(info.response_preview, meta.get(METADATA_OUTPUTS))
    if inputs is None or outputs is None:
        return record, False
    return record | {"inputs": inputs, "outputs": outputs, "payload_from": "preview"}, True


def raw_frame(records: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(records, schema=RAW_SCHEMA)


LIST_PAGE = 2000  # metadata-only pages: 2,000 lists ~1.5x faster than 500 on sqlite (fewer queries)
SPAN_BATCH = 200  # traces per ``trace.request_id IN (...)`` query when previews were cut
REST_PAGE_MAX = 500  # an MLflow server rejects SearchTraces with max_results > 500 (INVALID_PARAMETER_VALUE)
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def _list_page(client: MlflowClient) -> int:
    """Page size for metadata listings: 2,000 against a database store, what a server accepts over REST."""
    return REST_PAGE_MAX if str(client.tracking_uri).startswith(("http://", "https://")) else LIST_PAGE


def _preview_rows(listed: Iterable[Trace]) -> tuple[list[dict[str, Any]], list[int]]:
    """Rows from listed (span-less) traces and the indexes of those whose previews were cut."""
    records, cut = [], []
    for trace in listed:
        record, complete = preview_record(trace.info)
        if not complete:
            cut.append(len(records))
        records.append(record)
    return records, cut


def _list_range(client: MlflowClient, experiment_id: str, start_ms: int, end_ms: int) -> tuple[list[dict[str, Any]], list[int]]:
    """Metadata rows of [start_ms, end_ms) and the indexes of those whose previews were cut."""
    return _preview_rows(read_traces(client, experiment_id, start_ms, end_ms, include_spans=False, page_size=_list_page(client)))


def _fetch_payloads(client: MlflowClient, record: dict[str, Any]) -> dict[str, Any]:
    """Payloads from the spans of one trace; metadata stays from the listing."""
    try:
        full = raw_record(client.get_trace(record["trace_id"], display=False))
    except Exception as exc:  # noqa: BLE001 - a trace whose spans cannot be read is quarantined, not fatal
        return record | {"payload_from": f"unreadable: {type(exc).__name__}"}
    return record | {k: full[k] for k in ("inputs", "outputs", "payload_from")}


def _fill_from_spans(client: MlflowClient, experiment_id: str, records: list[dict[str, Any]], cut: list[int]) -> None:
    """Replace cut previews by the root span's payloads, ``SPAN_BATCH`` traces per search.

    One ``trace.request_id IN (...)`` search with spans costs ~3 ms a trace against ~13 ms for
    ``get_trace``. The batch's time bounds go in the filter too: without them SQLite walks the whole
    experiment by timestamp for each batch (13x slower listing of the batch's metadata); a batch that fails (or a trace it does not return) falls back to ``get_trace``,
    which quarantines only the trace that cannot be read.
    """
    for at in range(0, len(cut), SPAN_BATCH):
        batch = cut[at : at + SPAN_BATCH]
        ids = [records[i]["trace_id"] for i in batch]
        found: dict[str, Trace] = {}
        if all(_SAFE_ID.match(i or "") for i in ids):
            stamps = [records[i]["timestamp_ms"] for i in batch]
            query = _window_filter(min(stamps), max(stamps) + 1) + " AND trace.request_id IN (" + ", ".join(f"'{i}'" for i in ids) + ")"
            try:
                page = client.search_traces(locations=[experiment_id], filter_string=query, max_results=len(ids), include_spans=True)
                found = {t.info.trace_id: t for t in page}
            except Exception:  # noqa: BLE001 - fall back to one read per trace below
                found = {}
        for index in batch:
            trace = found.get(records[index]["trace_id"])
            full = raw_record(trace) if trace is not None else None
            if full is None or full["inputs"] is None:
                records[index] = _fetch_payloads(client, records[index])
            else:
                records[index] = records[index] | {k: full[k] for k in ("inputs", "outputs", "payload_from")}


def _read_range(client: MlflowClient, experiment_id: str, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
    records, cut = _list_range(client, experiment_id, start_ms, end_ms)
    _fill_from_spans(client, experiment_id, records, cut)
    return records


_WORKER_CLIENTS: dict[str, MlflowClient] = {}
_POOLS: dict[int, ProcessPoolExecutor] = {}


def _read_range_job(tracking_uri: str, experiment_id: str, start_ms: int, end_ms: int) -> bytes:
    """Worker-process entry point: one time slice as Arrow IPC bytes (cheap to ship back)."""
    client = _WORKER_CLIENTS.get(tracking_uri) or _WORKER_CLIENTS.setdefault(tracking_uri, MlflowClient(tracking_uri))
    frame = raw_frame(_read_range(client, experiment_id, start_ms, end_ms))
    sink = io.BytesIO()
    frame.write_ipc(sink)
    return sink.getvalue()


def _reader_pool(workers: int) -> ProcessPoolExecutor:
    """Reader processes, started once per process and reused, forked from a clean fork server.

    Plain ``fork`` would copy the caller's threads and open SQLite connections (unsafe). A worker
    costs an MLflow import and a store connection (seconds each), so workers and their clients live
    as long as the calling process.
    """
    pool = _POOLS.get(workers)
    if pool is None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        pool = _POOLS[workers] = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    return pool


def default_processes() -> int:
    """Reader processes: ``TELEPROMPT_INGEST_PROCESSES`` or the CPUs this process may use."""
    configured = os.environ.get("TELEPROMPT_INGEST_PROCESSES")
    return max(1, int(configured)) if configured else max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _read_in_workers(client: MlflowClient, experiment_id: str, start_ms: int, end_ms: int, workers: int, slices: int) -> list[pl.DataFrame]:
    """[start_ms, end_ms) in ``slices`` time slices across the reader pool; a slice whose worker died is read here."""
    bounds = sorted({start_ms + (end_ms - start_ms) * i // slices for i in range(slices + 1)})
    pool = _reader_pool(workers)
    jobs = [(a, b, pool.submit(_read_range_job, str(client.tracking_uri), experiment_id, a, b)) for a, b in itertools.pairwise(bounds)]
    frames = []
    for a, b, job in jobs:
        try:
            frames.append(pl.read_ipc(io.BytesIO(job.result())))
        except BrokenProcessPool:
            _POOLS.pop(workers, None)
            frames.append(raw_frame(_read_range(client, experiment_id, a, b)))
    return frames


def read_window(client: MlflowClient, experiment_id: str, start_ms: int, end_ms: int, *, processes: int | None = None,
                slices_per_process: int = 4) -> pl.DataFrame:
    """Every trace of [start_ms, end_ms) as a raw table, full payloads, the fast way.

    Lists metadata only (``include_spans=False``, ~5x faster than with spans), takes payloads from
    previews where they are provably complete and reads spans in batches only for the rest. Listing
    is CPU-bound in MLflow's client (entity building), so threads do not help: a window larger than
    one page is cut into time slices read by ``processes`` worker processes, each with its own
    client. Rows are deduplicated by trace id (the first page and the slices share their boundary
    millisecond) and sorted by (timestamp, trace id), so the table does not depend on the slicing.
    """
    first = client.search_traces(locations=[experiment_id], filter_string=_window_filter(start_ms, end_ms), max_results=_list_page(client),
                                 order_by=["timestamp_ms ASC"], include_spans=False)
    records, cut = _preview_rows(first)
    _fill_from_spans(client, experiment_id, records, cut)
    frames = [raw_frame(records)]
    if first.token:
        rest = max(start_ms, records[-1]["timestamp_ms"])
        workers = processes or default_processes()
        if workers <= 1:
            frames.append(raw_frame(_read_range(client, experiment_id, rest, end_ms)))
        else:
            frames += _read_in_workers(client, experiment_id, rest, end_ms, workers, workers * slices_per_process)
    table = pl.concat(frames, how="vertical")
    return table.unique("trace_id", keep="first", maintain_order=True).sort("timestamp_ms", "trace_id", nulls_last=True)


def _dump_canonical(content: Mapping[str, Any]) -> bytes:
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


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
    return _dump_canonical(content)


def trace_hash(row: Mapping[str, Any]) -> str:
    return "0x" + keccak(canonical_json(row)).hex()


MAX_PAYLOAD_CHARS = 200_000  # inputs + outputs JSON text; larger traces are quarantined as enormous
REASONS: dict[str, str] = {
    "duplicate_trace_id": "the trace id was already read in this partition (the earliest row is kept)",
    "trace_error": "the trace did not finish OK",
    "missing_program": f"no {PROGRAM_TAG} tag",
    "program_mismatch": "tagged for another (or an unknown) program",
    "missing_contributor": f"no {CONTRIBUTOR_TAG} tag",
    "invalid_contributor": "the contributor tag is not an Ethereum address",
    "contributor_not_checksummed": "the contributor address is not EIP-55 checksummed",
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
        return "contributor_not_checksummed", f"{address} is not EIP-55 checksummed ({to_checksum_address(address)})"
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
        # Same bytes as _dump_canonical(content) (top-level keys in sorted order), with the repeated
        # parts (outputs, feedback, expectations) serialized once per distinct value.
        return b"".join((
            b'{"contributor":', _canon_tag(row["contributor"]), b',"expectations":', _cached_canon(row["expectations"] or "{}"),
            b',"feedback":', _cached_canon(row["feedback"] or "{}"), b',"inputs":', _canon(inputs),
            b',"outputs":', _cached_canon(row["outputs"]), b',"program":', _canon_tag(row["program"]),
            b',"timestamp_ms":', b"%d" % row["timestamp_ms"], b',"trace_id":', _encode_string(row["trace_id"]).encode("utf-8"), b"}",
        ))
    except UnicodeEncodeError as exc:
        return "invalid_unicode", f"cannot encode as UTF-8: {exc.reason} at {exc.start}"
    except ValueError as exc:
        return "malformed_payload", f"not canonical JSON: {exc}"


_encode_string = json.encoder.encode_basestring  # a JSON string literal, non-ASCII kept (as ensure_ascii=False)
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _canon(value: Any) -> bytes:
    return _CANONICAL.encode(value).encode("utf-8")


_canon_tag = lru_cache(maxsize=65_536)(_canon)


@lru_cache(maxsize=65_536)
def _cached_loads(text: str) -> Any:
    return json.loads(text)


@lru_cache(maxsize=65_536)
def _cached_canon(text: str) -> bytes:
    return _canon(json.loads(text))


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


def day_bounds_ms(day: str) -> tuple[int, int]:
    from datetime import date, datetime, time, timedelta, timezone

    start = datetime.combine(date.fromisoformat(day), time(0), tzinfo=timezone.utc)
    return int(start.timestamp() * 1000), int((start + timedelta(days=1)).timestamp() * 1000)


def read_day(client: MlflowClient, experiment_id: str, day: str, *, processes: int | None = None) -> pl.DataFrame:
    """One UTC day of an experiment's traces as a raw table (see :func:`read_window`).

    Re-reading a day picks up traces that arrived late (their timestamp is their start time, so a
    late trace lands in its own day); each trace id appears once, so nothing is counted twice.
    """
    start, end = day_bounds_ms(day)
    return read_window(client, experiment_id, start, end, processes=processes)


def read_day_naive(client: MlflowClient, experiment_id: str, day: str) -> pl.DataFrame:
    """The straightforward read (every trace with its spans); the reference for tests and the benchmark."""
    start, end = day_bounds_ms(day)
    return raw_frame([raw_record(t) for t in read_traces(client, experiment_id, start, end)])


def count_day(client: MlflowClient, experiment_id: str, day: str, scan: Mapping[str, Any] | None = None,
              deadline: float | None = None, clock: Callable[[], float] = time.monotonic) -> tuple[int | None, dict[str, Any] | None]:
    """Traces on one UTC day, metadata only, resumable: ``(count, None)`` when done, else ``(None, scan)``.

    MLflow has no count query, so counting lists every trace (~3,000/s on sqlite). A caller with a
    time budget (a sensor tick) passes ``deadline``; when it passes, the page token and the count so
    far come back as ``scan``, to be handed to the next call. The token is an offset into the
    timestamp-ordered listing, so traces inserted meanwhile still add up to the right total.
    """
    start, end = day_bounds_ms(day)
    query = f"trace.timestamp_ms >= {start} AND trace.timestamp_ms < {end}"
    total, token = (int(scan["counted"]), scan["token"]) if scan else (0, None)
    while True:
        page = client.search_traces(locations=[experiment_id], filter_string=query, max_results=_list_page(client), page_token=token,
                                    order_by=["timestamp_ms ASC"], include_spans=False)
        total += len(page)
        token = page.token
        if not token:
            return total, None
        if deadline is not None and clock() >= deadline:
            return None, {"token": token.decode() if isinstance(token, bytes) else token, "counted": total}


def count_by_day(client: MlflowClient, experiment_id: str, days: list[str]) -> dict[str, int]:
    """Traces per UTC day, reading metadata only (no spans)."""
    return {day: count_day(client, experiment_id, day)[0] for day in days}
