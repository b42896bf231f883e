"""Ingestion benchmark: naive MLflow read vs our ingestion to curated tables (not a timed test).

    .venv/bin/python benchmarks/ingest.py                 # 100,000 traces (fixture cached)
    .venv/bin/python benchmarks/ingest.py --traces 5000   # quick run

Fixture (cached under ``.teleprompt/bench/<N>/``): ``TEMPLATES`` labeled traces of one UTC day are
written through the real API (``traced_call`` + ``label_trace``, the trace contract helper, ~30/s),
with the demo's ticket traffic (``samples.ticket_traffic``) plus long and broken traces;
the rest are SQL copies of those rows *inside MLflow's own schema* (trace_info, trace_tags,
trace_request_metadata, spans, assessments) with fresh trace/assessment ids, fresh timestamps spread
over the day and a fresh 8-character serial in the message text (fixed width, so preview lengths,
preview cuts and sizes stay what MLflow computed). What is synthetic: ids, timestamps, the serial,
and the fact that 100k traces share TEMPLATES message shapes, contributors and labels. Everything is
read back through MLflow's public client, exactly as production rows would be.

The last line is ``ingest: <N> traces in <S> s (<T> traces/s), <R>x naive, curate <C> s, peak RSS <M> MB``:
S = read_day + curate (raw -> curated + quarantine tables); R = naive seconds / S; C = curate alone;
M = peak RSS after our ingestion and before the naive read: this process's plus every reader
process's peak (VmHWM), summed, an upper bound on what ingestion held at once.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sqlite3
import sys
import time
import uuid
from datetime import date
from pathlib import Path

from teleprompt_assets.core.config import QualityConfig

REPO = Path(__file__).resolve().parents[1]
DAY = date(2026, 3, 4)
TEMPLATES = 300
SERIAL = "ZZZZZZZZ"
FIXTURE_VERSION = "2"


def _env(home: Path) -> None:
    os.environ["TELEPROMPT_HOME"] = str(home)
    os.environ.setdefault("TELEPROMPT_CONFIG", str(REPO / "teleprompt.yaml"))
    os.environ["MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"] = "false"
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "TELEPROMPT_ARTIFACT_ROOT"):
        os.environ.pop(var, None)


def _templates(home: Path, count: int) -> None:
    """``count`` labeled traces through the real API: the demo's ticket traffic (5 contributors, one
    noisy labeler, one duplicate flooder) plus long (cut-preview) and broken ones, each message
    tagged with a replaceable serial so that copies are distinct tickets."""
    from teleprompt_assets.core.settings import load_settings
    from teleprompt_assets.core.spec import load_project
    from teleprompt_assets.core.tracking import connect, experiment_id
    from teleprompt_assets.ingest.tracing import label_trace, traced_call
    from teleprompt_assets.samples.seed import day_start_ns
    from teleprompt_assets.samples.ticket_traffic import tickets

    settings = load_settings()
    client = connect(settings)
    spec = load_project(settings.config_path)[1]["ticket_router"]
    exp = experiment_id(client, settings, spec.config.experiment)
    rng = random.Random(7)
    queues = ["billing", "technical", "account", "shipping", "sales"]
    start = day_start_ns(DAY)
    for i, ticket in enumerate(tickets(count, rng)):
        contributor = ticket.contributor.address
        text = f"{ticket.message} (ref {SERIAL}, é ✓)"
        if i % 20 == 0:
            text += " details:" + " lorem ipsum" * 120  # > 1,000 chars: preview cut, spans needed
        if i % 50 == 1:
            contributor = contributor.lower()  # broken: not checksummed
        guess = ticket.true_queue if rng.random() < 0.7 else rng.choice(queues)
        trace_id, _ = traced_call(spec.name, contributor, {"message": text}, lambda message, guess=guess: {"queue": guess},
                                  experiment_id=exp, start_time_ns=start + i * 10**9)
        resolved = rng.random() < (0.85 if guess == ticket.true_queue else 0.2)
        feedback = {"resolved_first_touch": resolved, "csat": round(min(1.0, max(0.0, rng.gauss(0.8 if resolved else 0.4, 0.15))), 2)}
        if i % 9 == 0:
            feedback.pop("csat")  # partial scores
        label_trace(trace_id, contributor, feedback, {"queue": ticket.label} if ticket.label and i % 25 else {})


def _replicate(db: Path, total: int) -> None:
    """Copy template rows inside MLflow's schema until the day holds ``total`` traces."""
    con = sqlite3.connect(db)
    cur = con.cursor()
    infos = cur.execute("SELECT * FROM trace_info ORDER BY timestamp_ms").fetchall()
    info_cols = [d[0] for d in cur.description]
    def rows(table: str, key: str) -> tuple[list[str], dict[str, list[tuple]]]:
        found = cur.execute(f"SELECT * FROM {table}").fetchall()
        cols = [d[0] for d in cur.description]
        grouped: dict[str, list[tuple]] = {}
        for row in found:
            grouped.setdefault(row[cols.index(key)], []).append(row)
        return cols, grouped
    tag_cols, tags = rows("trace_tags", "request_id")
    meta_cols, metas = rows("trace_request_metadata", "request_id")
    assess_cols, assessments = rows("assessments", "trace_id")
    span_rows = cur.execute("SELECT trace_id, experiment_id, span_id, parent_span_id, name, type, status, start_time_unix_nano, end_time_unix_nano, content FROM spans").fetchall()
    spans: dict[str, list[tuple]] = {}
    for row in span_rows:
        spans.setdefault(row[0], []).append(row)
    import base64

    day_ms = int(time.mktime(DAY.timetuple())) * 0  # placeholder, replaced below
    t0 = min(i[info_cols.index("timestamp_ms")] for i in infos)
    day_ms = t0 - t0 % 86_400_000
    rng = random.Random(11)
    need = total - len(infos)
    ri, ti, ei = info_cols.index("request_id"), info_cols.index("timestamp_ms"), info_cols.index("request_preview")
    qi = info_cols.index("response_preview")
    cur.execute("PRAGMA synchronous=OFF")
    cur.execute("PRAGMA journal_mode=MEMORY")
    batch: dict[str, list[tuple]] = {"trace_info": [], "trace_tags": [], "trace_request_metadata": [], "assessments": [], "spans": []}

    def flush() -> None:
        for table, values in batch.items():
            if not values:
                continue
            if table == "spans":
                cols = "trace_id, experiment_id, span_id, parent_span_id, name, type, status, start_time_unix_nano, end_time_unix_nano, content"
                n = 10
            else:
                cols = ", ".join(f'"{c}"' for c in {"trace_info": info_cols, "trace_tags": tag_cols, "trace_request_metadata": meta_cols, "assessments": assess_cols}[table])
                n = len(values[0])
            cur.executemany(f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' * n)})", values)
            values.clear()

    for k in range(need):
        src = infos[k % len(infos)]
        old_id = src[ri]
        new_hex = uuid.UUID(int=rng.getrandbits(128)).hex
        new_id = "tr-" + new_hex
        serial = f"{k:08x}"
        new_ts = day_ms + rng.randrange(86_400_000)
        shift_ms = new_ts - src[ti]
        info = list(src)
        info[ri], info[ti] = new_id, new_ts
        info[ei] = info[ei].replace(SERIAL, serial) if info[ei] else info[ei]
        info[qi] = info[qi].replace(SERIAL, serial) if info[qi] else info[qi]
        batch["trace_info"].append(tuple(info))
        for row in tags.get(old_id, []):
            r = list(row)
            r[tag_cols.index("request_id")] = new_id
            r[tag_cols.index("value")] = (r[tag_cols.index("value")] or "").replace(old_id, new_id)
            batch["trace_tags"].append(tuple(r))
        for row in metas.get(old_id, []):
            r = list(row)
            r[meta_cols.index("request_id")] = new_id
            r[meta_cols.index("value")] = (r[meta_cols.index("value")] or "").replace(SERIAL, serial)
            batch["trace_request_metadata"].append(tuple(r))
        for row in assessments.get(old_id, []):
            r = list(row)
            r[assess_cols.index("assessment_id")] = "a-" + uuid.UUID(int=rng.getrandbits(128)).hex
            r[assess_cols.index("trace_id")] = new_id
            r[assess_cols.index("trace_timestamp_ms")] = new_ts
            batch["assessments"].append(tuple(r))
        old_hex = old_id[3:]
        old_b64 = base64.b64encode(bytes.fromhex(old_hex)).decode()
        new_b64 = base64.b64encode(bytes.fromhex(new_hex)).decode()
        for row in spans.get(old_id, []):
            start_ns, end_ns = row[7] + shift_ms * 10**6, (row[8] + shift_ms * 10**6) if row[8] is not None else None
            content = row[9].replace(old_b64, new_b64).replace(old_id, new_id).replace(SERIAL, serial)
            content = content.replace(str(row[7]), str(start_ns))
            if row[8] is not None:
                content = content.replace(str(row[8]), str(end_ns))
            batch["spans"].append((new_id, row[1], row[2], row[3], row[4], row[5], row[6], start_ns, end_ns, content))
        if len(batch["trace_info"]) >= 5_000:
            flush()
    flush()
    con.commit()
    con.close()


def build_fixture(total: int, root: Path) -> Path:
    """The cached store for ``total`` traces; built once (templates through the API, the rest by SQL)."""
    home = root / f"{total}"
    marker = home / f"fixture-v{FIXTURE_VERSION}.ok"
    _env(home)
    if marker.exists():
        return home
    shutil.rmtree(home, ignore_errors=True)
    began = time.perf_counter()
    _templates(home, min(TEMPLATES, total))
    api_s = time.perf_counter() - began
    if total > TEMPLATES:
        _replicate(home / "mlflow.db", total)
    marker.write_text(json.dumps({"traces": total, "templates": min(TEMPLATES, total), "api_seconds": round(api_s, 1),
                                  "total_seconds": round(time.perf_counter() - began, 1)}))
    print(f"fixture: {total} traces in {time.perf_counter() - began:.0f} s ({min(TEMPLATES, total)} through the API in {api_s:.0f} s)", flush=True)
    return home


def reader_peak_mb() -> float:
    """Summed peak RSS (VmHWM) of the live ingestion reader processes (children of the fork server)."""
    from teleprompt_assets.ingest import traces

    total_kb = 0
    for pool in traces._POOLS.values():
        for pid in list(getattr(pool, "_processes", {}) or {}):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            total_kb += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
    return total_kb / 1024


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 + reader_peak_mb()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=100_000)
    parser.add_argument("--root", type=Path, default=REPO / ".teleprompt" / "bench")
    parser.add_argument("--processes", type=int, default=None, help="reader processes (default: the CPUs available)")
    args = parser.parse_args(argv)
    build_fixture(args.traces, args.root)

    import mlflow

    from teleprompt_assets.core.settings import load_settings
    from teleprompt_assets.core.spec import load_project
    from teleprompt_assets.core.tracking import connect, experiment_id
    from teleprompt_assets.curate import quality
    from teleprompt_assets.ingest import traces

    settings = load_settings()
    client = connect(settings)
    spec = load_project(settings.config_path)[1]["ticket_router"]
    exp = experiment_id(client, settings, spec.config.experiment)
    day = DAY.isoformat()
    now_ms = int(time.time() * 1000)
    config = QualityConfig()

    began = time.perf_counter()
    raw = traces.read_day(client, exp, day, processes=args.processes)
    read_s = time.perf_counter() - began
    c0 = time.perf_counter()
    result = quality.curate(raw, spec, config, now_ms=now_ms)
    curate_s = time.perf_counter() - c0
    ours_s = time.perf_counter() - began
    rss = _peak_rss_mb()
    n = raw.height
    assert result.accepted.height + result.quarantined.height == n, "read != accepted + quarantined"
    from_spans = raw.filter(pl_col_eq(raw, "spans")).height
    print(f"ours: read {read_s:.1f} s ({from_spans} payloads from spans), curate {curate_s:.2f} s: "
          f"{result.accepted.height} accepted, {result.quarantined.height} quarantined {dict(result.quarantined['reason'].value_counts().iter_rows())}", flush=True)

    start, end = traces.day_bounds_ms(day)
    n0 = time.perf_counter()
    naive = mlflow.search_traces(locations=[exp], filter_string=f"trace.timestamp_ms >= {start} AND trace.timestamp_ms < {end}", return_type="list")
    naive_s = time.perf_counter() - n0
    print(f"naive: mlflow.search_traces(return_type='list') read {len(naive)} traces in {naive_s:.1f} s", flush=True)
    assert len(naive) == n, f"naive read {len(naive)} traces, ours {n}"
    by_id = {t.info.trace_id: t for t in naive[:2000]}
    sample = raw.filter(__import__("polars").col("trace_id").is_in(list(by_id))).iter_rows(named=True)
    for row in sample:
        full = traces.raw_record(by_id[row["trace_id"]])
        assert (row["inputs"], row["outputs"], row["feedback"]) == (full["inputs"], full["outputs"], full["feedback"]), row["trace_id"]
    print(f"ingest: {n} traces in {ours_s:.1f} s ({n / ours_s:.0f} traces/s), {naive_s / ours_s:.1f}x naive, curate {curate_s:.2f} s, peak RSS {rss:.0f} MB")
    return 0


def pl_col_eq(frame, value):
    import polars as pl

    return pl.col("payload_from") == value


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
