"""Curation with and without the identity check, on the ingestion benchmark's day (not a timed test).

    .venv/bin/python benchmarks/identity.py                       # 100,000 traces (fixture shared with ingest.py)
    .venv/bin/python benchmarks/identity.py --traces 5000 --runs 3
    .venv/bin/python benchmarks/identity.py --baseline-code /tmp/old   # also curate with the package found there

The day is read once from ``benchmarks/ingest.py``'s cached fixture (built if missing) and kept as
``raw-<day>.parquet`` beside it, so each run measures curation alone on the same raw table. Each
curation runs in a fresh process (cold caches, as a Dagster step process starts), alternating
without and with the sample config's ``trust:`` section, ``--runs`` times each; the figure is the
median. ``--baseline-code DIR`` curates with trust once more with ``teleprompt_assets`` imported from
DIR (an export of an older commit), for a before/after on the same table and load.

Every run prints its accepted and quarantined counts and a digest of its output (accepted trace ids
and trace hashes, quarantined trace ids and reasons), and the benchmark fails if a trusted run
quarantines or ignores anything for identity, or if two trusted runs (baseline included) disagree.
Last line: ``identity: <N> traces, curate without trust <A> s, with trust <B> s (<B/A>x), <V> signatures, <us> us a trace over no trust``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def raw_table(traces: int, root: Path) -> Path:
    """The fixture's day as a raw table (``traces.read_day``), read once and kept beside the fixture."""
    from benchmarks.ingest import DAY, FIXTURE_VERSION, build_fixture

    home = build_fixture(traces, root)
    path = home / f"raw-{DAY.isoformat()}-v{FIXTURE_VERSION}.parquet"
    if not path.exists():
        from teleprompt_assets.core.settings import load_settings
        from teleprompt_assets.core.spec import load_project
        from teleprompt_assets.core.tracking import connect, experiment_id
        from teleprompt_assets.ingest import traces as reading

        settings = load_settings()
        client = connect(settings)
        _, specs = load_project(settings.config_path)
        began = time.perf_counter()
        raw = reading.read_day(client, experiment_id(client, settings, specs["ticket_router"].config.experiment), DAY.isoformat())
        raw.write_parquet(path.with_suffix(".tmp"))
        path.with_suffix(".tmp").rename(path)
        print(f"read the day once: {raw.height} traces in {time.perf_counter() - began:.1f} s -> {path}", flush=True)
    return path


def child(path: Path, trusted: bool) -> dict:
    """One curation of the raw table in this (fresh) process; what the parent prints and compares."""
    import polars as pl

    from teleprompt_assets.core.config import QualityConfig
    from teleprompt_assets.core.spec import load_project
    from teleprompt_assets.curate import quality

    project, specs = load_project(Path(os.environ["TELEPROMPT_CONFIG"]))
    spec = specs["ticket_router"]
    trust = project.trust.policy(spec.name) if trusted and project.trust else None
    raw = pl.read_parquet(path)
    now_ms = int(time.time() * 1000)
    began = time.perf_counter()
    result = quality.curate(raw, spec, QualityConfig(), now_ms=now_ms, trust=trust)
    seconds = time.perf_counter() - began
    digest = hashlib.sha256()
    for trace_id, trace_hash in result.accepted.select("trace_id", "trace_hash").sort("trace_id").iter_rows():
        digest.update(f"a {trace_id} {trace_hash}\n".encode())
    for trace_id, reason in result.quarantined.select("trace_id", "reason").sort("trace_id").iter_rows():
        digest.update(f"q {trace_id} {reason}\n".encode())
    reasons = dict(sorted(result.quarantined["reason"].value_counts().iter_rows()))
    return {"seconds": seconds, "read": raw.height, "accepted": result.accepted.height, "quarantined": result.quarantined.height,
            "reasons": reasons, "identity": result.identity, "digest": digest.hexdigest()[:16], "trusted": trust is not None,
            "code": str(Path(quality.__file__).resolve().parents[2])}


def _run_child(path: Path, trusted: bool, code: Path | None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*([str(code)] if code else []), str(REPO)])  # an older package first, when given
    # ``-m`` puts the working directory ahead of PYTHONPATH: run from the older package's folder
    out = subprocess.run([sys.executable, "-m", "benchmarks.identity", "--child", str(path), *(["--trusted"] if trusted else [])],
                         cwd=code or REPO, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _line(label: str, found: dict) -> str:
    return (f"{label}: curate {found['seconds']:.2f} s, read {found['read']}, accepted {found['accepted']}, quarantined {found['quarantined']} "
            f"{found['reasons']}, identity {found['identity']}, digest {found['digest']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=100_000)
    parser.add_argument("--root", type=Path, default=REPO / ".teleprompt" / "bench")
    parser.add_argument("--runs", type=int, default=1, help="curations per mode, each in a fresh process (median reported)")
    parser.add_argument("--baseline-code", type=Path, default=None, help="a directory holding an older teleprompt_assets package")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--trusted", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.trusted)))
        return 0

    from benchmarks.ingest import IDENTITY_REASONS, check_identity

    path = raw_table(args.traces, args.root)
    plain: list[dict] = []
    trusted: list[dict] = []
    for run in range(args.runs):
        for is_trusted, into in ((False, plain), (True, trusted)):
            found = _run_child(path, is_trusted, None)
            into.append(found)
            print(_line(f"run {run + 1} {'with trust   ' if is_trusted else 'without trust'}", found), flush=True)
    for found in trusted:
        check_identity(found["read"], found["accepted"], found["reasons"], found["identity"], found["trusted"])
    if args.baseline_code:
        base = _run_child(path, True, args.baseline_code.resolve())
        print(_line(f"baseline with trust ({base['code']})", base), flush=True)
        trusted_digests = {f["digest"] for f in trusted} | {base["digest"]}
        if len(trusted_digests) != 1:
            raise SystemExit(f"trusted runs disagree with the baseline: digests {sorted(trusted_digests)}")
        print(f"baseline: {base['seconds']:.2f} s, same output as this tree's {statistics.median(f['seconds'] for f in trusted):.2f} s", flush=True)
    if len({f["digest"] for f in trusted}) != 1:
        raise SystemExit("trusted runs disagree with each other")
    refused = {r for f in trusted for r in f["reasons"] if r in IDENTITY_REASONS}
    assert not refused, refused
    a = statistics.median(f["seconds"] for f in plain)
    b = statistics.median(f["seconds"] for f in trusted)
    counts = trusted[0]["identity"]
    signatures = counts.get("signed", 0) + counts.get("labels_counted", 0)
    n = trusted[0]["read"]
    same = "same output" if trusted[0]["digest"] == plain[0]["digest"] else "outputs differ"
    print(f"identity: {n} traces, curate without trust {a:.2f} s, with trust {b:.2f} s ({b / a:.1f}x, {same}), {signatures} signatures, "
          f"{(b - a) / n * 1e6:.0f} us a trace over no trust")
    return 0


if __name__ == "__main__":
    sys.path.append(str(REPO))  # after, not before: a --baseline-code child imports the older package first
    sys.exit(main())
