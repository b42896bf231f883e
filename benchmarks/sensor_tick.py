"""How long a new-traces sensor tick takes on a large store (not a test).

    .venv/bin/python benchmarks/sensor_tick.py                # the 100,000-trace ingest fixture
    .venv/bin/python benchmarks/sensor_tick.py --budget 8

The sensor decides by counting each closed day's traces; MLflow has no count query, so a count
lists every trace (metadata only). Here the whole fixture sits on one day, the worst case for one
count. It measures the unbounded count (skipped above 200,000 traces: ``--full`` forces it), then the
same count the way the sensor does it: resumed across ticks of ``--budget`` seconds
(``traces.count_day`` with a deadline, state in the cursor), checked against a direct SQL count.

    .venv/bin/python benchmarks/sensor_tick.py --traces 1000000   # builds a ~6 GB store once (~15 min)

Last line: ``sensor: <N> traces on one day, full count <F> s, <K> ticks of <= <T> s (budget <B> s)``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=100_000)
    parser.add_argument("--root", type=Path, default=REPO / ".teleprompt" / "bench")
    parser.add_argument("--budget", type=float, default=6.0)
    parser.add_argument("--full", action="store_true", help="also time one unbounded count above 200,000 traces")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from benchmarks.ingest import DAY, build_fixture

    build_fixture(args.traces, args.root)
    from teleprompt_assets.core.settings import load_settings
    from teleprompt_assets.core.spec import load_project
    from teleprompt_assets.core.tracking import connect, experiment_id
    from teleprompt_assets.ingest.traces import count_day

    settings = load_settings()
    client = connect(settings)
    exp = experiment_id(client, settings, load_project(settings.config_path)[1]["ticket_router"].config.experiment)
    day = DAY.isoformat()
    full, full_s = _sql_count(settings.tracking_uri, day), None
    if args.full or args.traces <= 200_000:
        began = time.perf_counter()
        assert count_day(client, exp, day)[0] == full
        full_s = time.perf_counter() - began
    ticks, longest, scan, count = 0, 0.0, None, None
    while count is None:
        t0 = time.perf_counter()
        count, scan = count_day(client, exp, day, scan, deadline=time.monotonic() + args.budget)
        longest = max(longest, time.perf_counter() - t0)
        ticks += 1
    assert count == full, (count, full)
    print(f"sensor: {full} traces on one day, full count {'not run' if full_s is None else f'{full_s:.1f} s'}, {ticks} ticks of <= {longest:.1f} s (budget {args.budget:g} s)")
    return 0


def _sql_count(tracking_uri: str, day: str) -> int:
    """The truth the walk is checked against, straight from the fixture's SQLite file."""
    import sqlite3

    from teleprompt_assets.ingest.traces import day_bounds_ms

    start, end = day_bounds_ms(day)
    with sqlite3.connect(tracking_uri.removeprefix("sqlite:///")) as con:
        return con.execute("SELECT COUNT(*) FROM trace_info WHERE timestamp_ms >= ? AND timestamp_ms < ?", (start, end)).fetchone()[0]


if __name__ == "__main__":
    sys.exit(main())
