"""Both sample programs for one day: one run under the multiprocess executor (how the schedule runs
them now) against one in-process run per program, one after the other (how they ran before).

Each side gets its own store, seeded identically. ``--latency-ms`` makes every offline LM call wait
as a hosted LM's would (``TELEPROMPT_OFFLINE_LATENCY_MS``); the offline LM itself answers in
microseconds, so without it the comparison measures only Dagster's overhead. Offline-LM figures.

    .venv/bin/python benchmarks/parallel_programs.py --latency-ms 200
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROGRAMS = ["outreach_reply", "ticket_router"]
DAY = date(2026, 9, 14)

SEQUENTIAL = """
import sys, time
import dagster as dg
from teleprompt_assets.definitions import build_definitions
from teleprompt_assets.launch import run_partition
defs = build_definitions()
with dg.DagsterInstance.get() as instance:
    for program in sys.argv[2:]:
        run_partition(defs, program, sys.argv[1], instance)
"""


def _env(home: Path, latency_ms: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TELEPROMPT_"))}
    return env | {"TELEPROMPT_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "TELEPROMPT_CONFIG": str(REPO / "teleprompt.yaml"),
                  "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING": "false", "TELEPROMPT_OFFLINE_LATENCY_MS": str(latency_ms)}


def _seed(env: dict[str, str], per_day: int) -> None:
    code = ("import sys; from datetime import date; from teleprompt_assets.core.settings import load_settings, ensure_home; "
            "from teleprompt_assets.core.spec import load_project; from teleprompt_assets.samples.seed import seed_program; "
            "s = load_settings(); ensure_home(s); specs = load_project(s.config_path)[1]; "
            f"[seed_program(s, specs[p], date.fromisoformat('{DAY.isoformat()}'), days=1, per_day={per_day}, seed=3) for p in {PROGRAMS!r}]")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    (Path(env["DAGSTER_HOME"])).mkdir(parents=True, exist_ok=True)
    (Path(env["DAGSTER_HOME"]) / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd[:3])} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-day", type=int, default=60)
    parser.add_argument("--latency-ms", type=int, default=200)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="tp-parallel-"))
    try:
        sides = {}
        for side in ("sequential", "parallel"):
            env = _env(root / side, args.latency_ms)
            _seed(env, args.per_day)
            sides[side] = env
        sequential = _timed([sys.executable, "-c", SEQUENTIAL, DAY.isoformat(), *PROGRAMS], sides["sequential"])
        parallel = _timed([sys.executable, "-m", "teleprompt_assets.cli", "run", "--date", DAY.isoformat()], sides["parallel"])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"sequential in-process runs: {sequential:.1f} s; one run, multiprocess executor: {parallel:.1f} s")
    print(f"parallel_programs: {len(PROGRAMS)} programs, {args.per_day} traces each, LM latency {args.latency_ms} ms (offline LM), "
          f"one run {parallel:.1f} s vs sequential {sequential:.1f} s ({sequential / parallel:.2f}x), {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
