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

Identity (docs/security.md#identity): the templates are signed with the public DEMO app key, which
the sample ``teleprompt.yaml`` trusts, and every copy carries its own valid signatures: a claim for
its own trace id, start time and payload hashes (``teleprompt.signature``) and one per label (the
label claims name the trace id too), made by :class:`DemoFixtureSigner` (~40 µs a signature where
eth-account takes ~3 ms). Curation here runs with the sample config's ``trust:`` section, as a user's
does, and the run fails instead of printing figures if any trace or label is refused for identity.

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
FIXTURE_VERSION = "3"  # 3: copies carry their own valid trace and label signatures


# secp256k1: field prime, group order, generator
_P = 2**256 - 2**32 - 977
_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_GX = 0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798
_GY = 0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8


class DemoFixtureSigner:
    """Signs EIP-712 digests as the public DEMO app key, ~40 µs a signature (eth-account: ~3 ms), for
    the fixture's ~370,000 copied claims and labels; ``identity.claim_tag`` and ``identity.sign_label``
    take it in place of an :class:`identity.Signer`.

    Plain ECDSA over secp256k1, low s, v = 27 + the parity of R's y: what eth-account produces, but
    for the nonce. The nonces are k0, k0 + 1, k0 + 2, ..., so each nonce point is the previous one
    plus G (one affine addition) instead of a scalar multiplication. Nonces with known differences
    give away the private key: harmless only because the DEMO key is public already (it is derived
    from a published phrase), so this class refuses any other key. Never sign with a secret key so.
    ``_replicate`` checks a sample of the signatures by full public-key recovery (which also checks
    v), and the benchmarks' curation verifies every one with the project's verifier.
    """

    def __init__(self, signer) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec
        from eth_utils import keccak

        from teleprompt_assets.core import identity

        if signer.address != identity.DEMO_APP_ADDRESS:
            raise ValueError("DemoFixtureSigner signs only as the public DEMO key: its nonces would leak any other key")
        self._d = int.from_bytes(signer._key, "big")
        self._k = int.from_bytes(keccak(signer._key + b"benchmark fixture nonces"), "big") % _N
        point = ec.derive_private_key(self._k, ec.SECP256K1()).public_key().public_numbers()  # k0 * G, by OpenSSL
        self._x, self._y = point.x, point.y
        self.address = signer.address

    def _step(self) -> None:
        """(k, R) -> (k + 1, R + G): the chord through R and G (R is never +-G: k0 is a hash, not +-1)."""
        slope = (_GY - self._y) * pow(_GX - self._x, -1, _P) % _P
        x = (slope * slope - self._x - _GX) % _P
        self._x, self._y = x, (slope * (self._x - x) - self._y) % _P
        self._k = (self._k + 1) % _N

    def sign(self, digest: bytes) -> str:
        z = int.from_bytes(digest, "big")
        while True:
            self._step()
            r = self._x
            if r >= _N:  # v cannot say r overflowed (probability ~2**-128): take the next nonce
                continue
            s = pow(self._k, -1, _N) * (z + r * self._d) % _N
            if s == 0:
                continue
            odd = self._y & 1
            if s > _N // 2:  # low s, as eth-account signs; negating s flips R's parity
                s, odd = _N - s, odd ^ 1
            return "0x" + (r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([27 + odd])).hex()


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
    from teleprompt_assets.core.identity import demo_signer
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
    signer = demo_signer()  # the key the sample config trusts, whatever TELEPROMPT_APP_KEY says
    for i, ticket in enumerate(tickets(count, rng)):
        contributor = ticket.contributor.address
        text = f"{ticket.message} (ref {SERIAL}, é ✓)"
        if i % 20 == 0:
            text += " details:" + " lorem ipsum" * 120  # > 1,000 chars: preview cut, spans needed
        if i % 50 == 1:
            contributor = contributor.lower()  # broken: not checksummed
        guess = ticket.true_queue if rng.random() < 0.7 else rng.choice(queues)
        trace_id, _ = traced_call(spec.name, contributor, {"message": text}, lambda message, guess=guess: {"queue": guess},
                                  experiment_id=exp, start_time_ns=start + i * 10**9, signer=signer)
        resolved = rng.random() < (0.85 if guess == ticket.true_queue else 0.2)
        feedback = {"resolved_first_touch": resolved, "csat": round(min(1.0, max(0.0, rng.gauss(0.8 if resolved else 0.4, 0.15))), 2)}
        if i % 9 == 0:
            feedback.pop("csat")  # partial scores
        label_trace(trace_id, contributor, feedback, {"queue": ticket.label} if ticket.label and i % 25 else {}, signer=signer)


class _Template:
    """What a template's copies sign anew: its claim and root-span payloads, and its labels."""

    def __init__(self, trace_id: str, tags: list[tuple], tag_cols: list[str], spans: list[tuple],
                 assessments: list[tuple], assess_cols: list[str]) -> None:
        from teleprompt_assets.core import identity

        demo = {identity.DEMO_APP_ADDRESS}
        tag = {r[tag_cols.index("key")]: r[tag_cols.index("value")] for r in tags}.get(identity.SIGNATURE_TAG)
        if tag is None:
            raise SystemExit(f"fixture: template {trace_id} has no {identity.SIGNATURE_TAG} tag")
        self.claim, signature = identity.parse_claim(tag)
        if identity.claim_signer(self.claim, signature, demo) not in demo or self.claim.trace_id != trace_id:
            raise SystemExit(f"fixture: template {trace_id} is not signed by the DEMO app key")
        root = next(json.loads(row[9]) for row in spans if row[3] is None)["attributes"]
        self.inputs, self.outputs = root["mlflow.spanInputs"], root.get("mlflow.spanOutputs")
        # the payload hashes as traced_call signed them and the reader recomputes them
        if (self._hash(self.inputs, SERIAL), self._hash(self.outputs, SERIAL)) != (self.claim.inputs_hash, self.claim.outputs_hash):
            raise SystemExit(f"fixture: template {trace_id}'s root span does not hash to its signed payloads")
        self.labels: list[tuple[str, str, str, int, dict]] = []  # kind, name, signed value, signed time, metadata
        for row in assessments:
            get = dict(zip(assess_cols, row, strict=True)).get
            metadata = json.loads(get("assessment_metadata") or "{}")
            label = identity.LabelClaim(trace_id, get("assessment_type"), get("name"), identity.label_value(json.loads(get("value"))),
                                        int(metadata[identity.LABEL_TIME]))
            if identity.label_signer(label, metadata.get(identity.LABEL_SIGNATURE), demo) not in demo:
                raise SystemExit(f"fixture: template {trace_id}'s {label.kind} {label.name!r} is not signed by the DEMO key")
            self.labels.append((label.kind, label.name, label.value, label.time_ms, metadata))

    @staticmethod
    def _hash(attribute: str | None, serial: str) -> str:
        from teleprompt_assets.core.identity import payload_hash

        return payload_hash(None if attribute is None else json.loads(attribute.replace(SERIAL, serial)))

    def signed_copy(self, trace_id: str, serial: str, shift_ms: int, signer: DemoFixtureSigner) -> tuple[str, dict[str, dict], list]:
        """The copy's signature tag and its labels' metadata by (kind, name), each signed for ``trace_id``."""
        from dataclasses import replace

        from teleprompt_assets.core import identity

        claim = replace(self.claim, trace_id=trace_id, start_ms=self.claim.start_ms + shift_ms,
                        inputs_hash=self._hash(self.inputs, serial), outputs_hash=self._hash(self.outputs, serial))
        labels = {}
        claims = [claim]
        for kind, name, value, time_ms, metadata in self.labels:
            label = identity.LabelClaim(trace_id, kind, name, value, time_ms)
            labels[(kind, name)] = metadata | identity.sign_label(label, signer)
            claims.append(label)
        return identity.claim_tag(claim, signer), labels, claims


def _recovers_demo(claims: list, tag: str, labels: dict[tuple[str, str], dict]) -> bool:
    """Full public-key recovery (no known key assumed, so v is checked too) of a copy's signatures."""
    from teleprompt_assets.core import identity

    claim, signature = identity.parse_claim(tag)
    ok = claim == claims[0] and identity.claim_signer(claim, signature) == identity.DEMO_APP_ADDRESS
    for label in claims[1:]:
        ok = ok and identity.label_signer(label, labels[(label.kind, label.name)][identity.LABEL_SIGNATURE]) == identity.DEMO_APP_ADDRESS
    return ok


def _replicate(db: Path, total: int) -> None:
    """Copy template rows inside MLflow's schema until the day holds ``total`` traces, each copy
    signed for its own trace id, start time and payloads (and its labels for its trace id)."""
    from teleprompt_assets.core import identity

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

    ri, ti, ei = info_cols.index("request_id"), info_cols.index("timestamp_ms"), info_cols.index("request_preview")
    qi = info_cols.index("response_preview")
    templates = {i[ri]: _Template(i[ri], tags.get(i[ri], []), tag_cols, spans.get(i[ri], []), assessments.get(i[ri], []), assess_cols)
                 for i in infos}
    signer = DemoFixtureSigner(identity.demo_signer())
    checked = 0
    t0 = min(i[ti] for i in infos)
    day_ms = t0 - t0 % 86_400_000
    rng = random.Random(11)
    need = total - len(infos)
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
        signature_tag, label_meta, claims = templates[old_id].signed_copy(new_id, serial, shift_ms, signer)
        if k % 997 == 0:  # ~100 copies at 100k: ~0.4 s of pure-Python recovery each with its labels
            if not _recovers_demo(claims, signature_tag, label_meta):
                raise SystemExit(f"fixture: copy {k}'s signatures do not recover to the DEMO app key")
            checked += 1
        for row in tags.get(old_id, []):
            r = list(row)
            r[tag_cols.index("request_id")] = new_id
            if r[tag_cols.index("key")] == identity.SIGNATURE_TAG:
                r[tag_cols.index("value")] = signature_tag
            else:
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
            key = (r[assess_cols.index("assessment_type")], r[assess_cols.index("name")])
            r[assess_cols.index("assessment_metadata")] = json.dumps(label_meta[key])
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
    print(f"fixture: {need} copies signed by the DEMO app key; {checked} of them checked by full recovery", flush=True)


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
    from teleprompt_assets.curate import quality, validation
    from teleprompt_assets.ingest import traces

    settings = load_settings()
    client = connect(settings)
    project, specs = load_project(settings.config_path)
    spec = specs["ticket_router"]
    exp = experiment_id(client, settings, spec.config.experiment)
    day = DAY.isoformat()
    now_ms = int(time.time() * 1000)
    config = QualityConfig()
    trust = project.trust.policy(spec.name) if project.trust else None  # the sample config's trust: section, as a user runs it
    print(f"identity: {validation.identity_statement(trust)}", flush=True)

    began = time.perf_counter()
    raw = traces.read_day(client, exp, day, processes=args.processes)
    read_s = time.perf_counter() - began
    c0 = time.perf_counter()
    result = quality.curate(raw, spec, config, now_ms=now_ms, trust=trust)
    curate_s = time.perf_counter() - c0
    ours_s = time.perf_counter() - began
    rss = _peak_rss_mb()
    n = raw.height
    assert result.accepted.height + result.quarantined.height == n, "read != accepted + quarantined"
    from_spans = raw.filter(pl_col_eq(raw, "spans")).height
    reasons = dict(result.quarantined["reason"].value_counts().iter_rows())
    print(f"ours: read {read_s:.1f} s ({from_spans} payloads from spans), curate {curate_s:.2f} s: "
          f"{result.accepted.height} accepted, {result.quarantined.height} quarantined {reasons}", flush=True)
    print(f"identity counts: {result.identity}", flush=True)
    check_identity(n, result.accepted.height, reasons, result.identity, trust is not None)

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


IDENTITY_REASONS = ("unsigned", "bad_signature", "unknown_signer")


def check_identity(read: int, accepted: int, reasons: dict[str, int], counts: dict[str, int], trusted: bool) -> None:
    """Fail loudly, before any figure is printed, when the run measured a pipeline that refuses the
    fixture: every trace and label of it is signed by the DEMO app key the sample config trusts, so
    none may be quarantined or ignored for identity, and a run without a trust section is not the
    pipeline a user runs. ``reasons``: quarantine reason -> count; ``counts``: the day's identity counts."""
    problems = []
    if not trusted:
        problems.append("no trust: section in the config (set TELEPROMPT_CONFIG to the sample teleprompt.yaml)")
    if not accepted:
        problems.append(f"no trace accepted of {read}")
    if refused := {r: reasons[r] for r in IDENTITY_REASONS if reasons.get(r)}:
        problems.append(f"traces quarantined for identity: {refused}")
    if ignored := {k: v for k, v in counts.items() if k in ("labels_unsigned", "labels_unauthorised") and v}:
        problems.append(f"labels ignored: {ignored}")
    if trusted and counts.get("signed", 0) != read:
        problems.append(f"{counts.get('signed', 0)} of {read} traces verified as signed")
    if problems:
        raise SystemExit("identity check failed, no figures: " + "; ".join(problems))


def run_identity(instance, run_id: str) -> dict:
    """What a Dagster run's ``curated_traces`` and ``quarantined_traces`` materializations say, summed
    over the partitions it curated (a window's missing days are curated by the same run): read,
    accepted, quarantine reasons, identity counts and the identity lines."""
    import dagster as dg

    def metadata(asset: str) -> list[dict]:
        records = instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records
        return [{k: v.value for k, v in r.asset_materialization.metadata.items()} for r in records if r.run_id == run_id]

    curated, quarantined = metadata("curated_traces"), metadata("quarantined_traces")
    reasons: dict[str, int] = {}
    counts: dict[str, int] = {}
    for m in quarantined:
        for k, v in (m.get("reasons") or {}).items():
            reasons[k] = reasons.get(k, 0) + v
    for m in curated:
        for k, v in (m.get("identity_counts") or {}).items():
            counts[k] = counts.get(k, 0) + v
    accepted = sum(m["accepted"] for m in curated)
    return {"read": accepted + sum(m["quarantined"] for m in quarantined), "accepted": accepted, "reasons": reasons,
            "identity": counts, "statements": sorted({m.get("identity", "") for m in curated}), "partitions": len(curated)}


def check_run_identity(found: dict) -> str:
    """:func:`check_identity` on :func:`run_identity`'s sums; one line to print when it passes."""
    check_identity(found["read"], found["accepted"], found["reasons"], found["identity"],
                   bool(found["statements"]) and all(s.startswith("verified") for s in found["statements"]))
    return (f"curated {found['partitions']} partition(s): read {found['read']}, accepted {found['accepted']}, "
            f"quarantined {found['read'] - found['accepted']} {found['reasons']}; identity {found['identity']}")


def pl_col_eq(frame, value):
    import polars as pl

    return pl.col("payload_from") == value


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
