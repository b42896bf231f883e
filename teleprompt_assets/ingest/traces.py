"""Reading a window of labeled traces from MLflow, full fidelity, as fast as the public client allows.

``raw`` rows keep what MLflow holds, as JSON text, so nothing is lost even when a trace is broken;
``curate.validation.validate`` then splits them into accepted and quarantined rows.
"""

from __future__ import annotations

import io
import itertools
import json
import multiprocessing
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC
from typing import Any

import polars as pl
from mlflow import MlflowClient
from mlflow.entities import Trace, TraceInfo
from mlflow.tracing.constant import SpanAttributeKey

from teleprompt_assets.core import identity
from teleprompt_assets.core.encoding import MAX_JSON_DEPTH, JsonTooDeep, loads_bounded
from teleprompt_assets.ingest.tracing import CONTRIBUTOR_TAG, PROGRAM_TAG, SIGNATURE_TAG

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
    "claim": pl.String,
    "assessments": pl.String,
}
"""One row per trace. ``inputs``/``outputs`` are the root span's full payloads as JSON text (a
payload nested deeper than ``MAX_PAYLOAD_DEPTH`` is kept as stored, unparsed, for curation to
quarantine); ``feedback`` maps each outcome metric to its latest valid value, whoever wrote it;
``expectations`` likewise; ``source`` holds MLflow's source metadata (``mlflow.source.*``,
``mlflow.user``, trace size) as JSON; ``payload_from`` says whether the payloads came from the trace
preview (complete, not cut) or from the spans. ``claim`` is the app's ``teleprompt.signature`` tag as
stored and ``assessments`` every feedback and expectation with its labeller signature (JSON list):
curation checks both against ``trust:`` (``curate/validation.py``), ingestion judges nothing."""
IDENTITY_COLUMNS = ("claim", "assessments")
MAX_PAYLOAD_DEPTH = MAX_JSON_DEPTH
"""Deepest nesting of a root span's inputs or outputs that is parsed. With py_ecc's recursion limit
(eth-account imports it) the C JSON parser overflows the stack on ~100k-deep text (SIGSEGV, the
whole step); depth is measured first, without recursion (``core.encoding.json_depth``)."""
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


def _keyset_pages(client: MlflowClient, experiment_id: str, start_ms: int, end_ms: int, size: int) -> Iterator[tuple[list[Trace], int]]:
    """Metadata pages of [start_ms, end_ms) in timestamp order, each with the millisecond the rest starts at.

    Walks by timestamp, never by MLflow's page tokens: those are offsets, and an offset query makes
    the database skip every row before it (a 2,000-trace page took 0.8 s at offset 2k and 1.6 s at
    96k on the 100k store). A page's last millisecond may go on in the next page, so its traces are
    held back and read from there; a page of one millisecond is read whole (tokens, within that ms).
    """
    from_ms = start_ms
    while from_ms < end_ms:
        listed = client.search_traces(locations=[experiment_id], filter_string=_window_filter(from_ms, end_ms), max_results=size,
                                      order_by=["timestamp_ms ASC"], include_spans=False)
        if not listed.token:
            yield list(listed), end_ms
            return
        last = listed[-1].info.request_time
        settled = [trace for trace in listed if trace.info.request_time < last]
        if not settled:
            settled, last = list(read_traces(client, experiment_id, last, last + 1, include_spans=False, page_size=size)), last + 1
        yield settled, last
        from_ms = last


_RAW_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def _json(value: Any) -> str:
    return _RAW_JSON.encode(value)


def _assessments(trace: Trace | TraceInfo) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """Latest valid value per feedback and expectation name (overridden and errored assessments lose),
    and every feedback and expectation as logged, valid or not, with its labeller signature: whether a
    label counts is curation's call (an override written by anyone must not unseat a signed label)."""
    info = trace.info if isinstance(trace, Trace) else trace
    feedback: dict[str, Any] = {}
    expectations: dict[str, Any] = {}
    logged: list[dict[str, Any]] = []
    ordered = sorted(info.assessments or [], key=lambda a: (a.last_update_time_ms or 0, a.assessment_id or ""))
    for assessment in ordered:
        if assessment.feedback is not None and assessment.feedback.error is None:
            kind, value = "feedback", assessment.feedback.value
        elif assessment.expectation is not None:
            kind, value = "expectation", assessment.expectation.value
        else:
            continue
        meta = assessment.metadata or {}
        logged.append({"kind": kind, "name": assessment.name, "value": value, "valid": assessment.valid is not False,
                       "signature": meta.get(identity.LABEL_SIGNATURE), "signed_ms": meta.get(identity.LABEL_TIME)})
        if assessment.valid is not False:
            (feedback if kind == "feedback" else expectations)[assessment.name] = value
    return feedback, expectations, logged


def _base_record(info: TraceInfo) -> dict[str, Any]:
    feedback, expectations, logged = _assessments(info)
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
        "claim": info.tags.get(SIGNATURE_TAG),
        "assessments": _json(logged),
    }


def _payload_text(stored: Any) -> str:
    """A root-span payload as the raw table holds it, from the span attribute's stored JSON text.

    Parsed here, never through MLflow's ``Span.inputs`` (a plain ``json.loads``): a text nested
    deeper than ``MAX_PAYLOAD_DEPTH`` is returned as stored for curation to quarantine. A text that
    is not JSON becomes a JSON string, as MLflow itself reads it.
    """
    if stored is None or stored == "":
        return "null"
    if not isinstance(stored, str):
        return _json(stored)
    try:
        return _json(loads_bounded(stored, max_depth=MAX_PAYLOAD_DEPTH))
    except JsonTooDeep:
        return stored
    except ValueError:
        return _json(stored)


def _root_payloads(trace: Trace) -> tuple[str, str] | None:
    """(inputs, outputs) text of the trace's root span from the spans' stored attributes, or None
    when it has no root span. ``to_dict`` hands back the stored attribute text without parsing it."""
    for span in trace.data.spans if trace.data else []:
        stored = span.to_dict()
        if not stored.get("parent_span_id", stored.get("parent_id")):
            attributes = stored.get("attributes") or {}
            return _payload_text(attributes.get(SpanAttributeKey.INPUTS)), _payload_text(attributes.get(SpanAttributeKey.OUTPUTS))
    return None


def raw_record(trace: Trace) -> dict[str, Any]:
    """A row from a trace read with its spans: payloads are the root span's inputs and outputs."""
    payloads = _root_payloads(trace)
    return _base_record(trace.info) | {
        "inputs": payloads[0] if payloads else None,
        "outputs": payloads[1] if payloads else None,
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
        value = loads_bounded(preview, max_depth=MAX_PAYLOAD_DEPTH)
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
    pages = _keyset_pages(client, experiment_id, start_ms, end_ms, _list_page(client))
    return _preview_rows(itertools.chain.from_iterable(page for page, _ in pages))


def _fetch_payloads(client: MlflowClient, experiment_id: str, record: dict[str, Any]) -> dict[str, Any]:
    """Payloads from the spans of one trace; metadata stays from the listing.

    A trace whose spans cannot be read is quarantined, but only while the store still answers: if
    it does not (a server gone between listing and span reads), the read fails, or the day would
    train on part of its data.
    """
    try:
        full = raw_record(client.get_trace(record["trace_id"], display=False))
    except Exception as exc:  # noqa: BLE001 - decided below: the trace is broken, or the store is gone
        client.get_experiment(experiment_id)  # raises when the store is unreachable
        return record | {"payload_from": f"unreadable: {type(exc).__name__}"}
    return record | {k: full[k] for k in ("inputs", "outputs", "payload_from")}


def _fill_from_spans(client: MlflowClient, experiment_id: str, records: list[dict[str, Any]], cut: list[int]) -> None:
    """Replace cut previews by the root span's payloads, ``SPAN_BATCH`` traces per search.

    One ``trace.request_id IN (...)`` search with spans costs ~3 ms a trace against ~13 ms for
    ``get_trace``. The batch's time bounds go in the filter too: without them SQLite walks the whole
    experiment by timestamp for each batch (13x slower listing of the batch's metadata). A batch
    that fails (or a trace it does not return) falls back to ``get_trace``,
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
                records[index] = _fetch_payloads(client, experiment_id, records[index])
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


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """Reader processes, started once per process and reused, forked from a clean fork server; curation
    lends them too (``curate.validation.vouch_table`` checks signatures there).

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


def forget_pool(workers: int) -> None:
    """Drop a pool whose process died (``BrokenProcessPool``): the next call starts a new one."""
    _POOLS.pop(workers, None)


def default_processes() -> int:
    """Reader processes: ``TELEPROMPT_INGEST_PROCESSES`` or the CPUs this process may use."""
    configured = os.environ.get("TELEPROMPT_INGEST_PROCESSES")
    return max(1, int(configured)) if configured else max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _read_in_workers(client: MlflowClient, experiment_id: str, start_ms: int, end_ms: int, workers: int, slices: int) -> list[pl.DataFrame]:
    """[start_ms, end_ms) in ``slices`` time slices across the reader pool; a slice whose worker died is read here."""
    bounds = sorted({start_ms + (end_ms - start_ms) * i // slices for i in range(slices + 1)})
    pool = worker_pool(workers)
    jobs = [(a, b, pool.submit(_read_range_job, str(client.tracking_uri), experiment_id, a, b)) for a, b in itertools.pairwise(bounds)]
    frames = []
    for a, b, job in jobs:
        try:
            frames.append(pl.read_ipc(io.BytesIO(job.result())))
        except BrokenProcessPool:
            forget_pool(workers)
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


def day_bounds_ms(day: str) -> tuple[int, int]:
    from datetime import date, datetime, time, timedelta

    start = datetime.combine(date.fromisoformat(day), time(0), tzinfo=UTC)
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
              deadline: float | None = None, clock: Callable[[], float] = time.monotonic,
              page: int | None = None) -> tuple[int | None, dict[str, Any] | None]:
    """Traces on one UTC day, metadata only, resumable: ``(count, None)`` when done, else ``(None, scan)``.

    MLflow has no count query, so counting lists every trace (~3,000/s on sqlite). A caller with a
    time budget (a sensor tick) passes ``deadline``; when it passes, ``scan`` (the first millisecond
    not yet counted, and the count so far) comes back, to be handed to the next call. Positions are
    timestamps, not page tokens (see :func:`_keyset_pages`), so a tick late in a 1M-trace day costs
    what one early in the day does.
    """
    start, end = day_bounds_ms(day)
    total, from_ms = (int(scan["counted"]), int(scan["from_ms"])) if scan and "from_ms" in scan else (0, start)
    for listed, next_ms in _keyset_pages(client, experiment_id, from_ms, end, page or _list_page(client)):
        total += len(listed)
        if next_ms < end and deadline is not None and clock() >= deadline:
            return None, {"from_ms": next_ms, "counted": total}
    return total, None


def count_by_day(client: MlflowClient, experiment_id: str, days: list[str]) -> dict[str, int]:
    """Traces per UTC day, reading metadata only (no spans)."""
    return {day: count_day(client, experiment_id, day)[0] for day in days}
