"""Fixed overhead of the CLI against the import floor, measured in the same run (not a test).

    .venv/bin/python benchmarks/overhead.py              # 3 rounds
    .venv/bin/python benchmarks/overhead.py --rounds 5

A fresh home (``--root``) gets seven days of ``ticket_router`` traffic (``teleprompt seed``, offline
LM) and one ``teleprompt run --program ticket_router``; that first run compiles, registers v1 and
attests. Each round then measures, in fresh processes, one after another so they share the load:

- **floor**: ``python -c "import dspy, mlflow, dagster, polars"``, the least any run pays;
- **re-run**: ``teleprompt run --program ticket_router`` again, the same day (one program: in the
  CLI's process); it must print the first run's version and attestation (nothing new registered);
- **launched**: the same with ``--launch`` (code server, run process, a process per step), the
  path the schedule takes;
- **status** and **verify --offline** (the first run's bundle): wall time, and the work beyond
  their imports: the command's own call in a process that imported beforehand every module a first
  call of it imported (recorded in another fresh process).

The figure is the median over rounds. ``verify --offline`` must import no ``mlflow``. Last line:

    overhead: floor F s, re-run R s (R/F x, target <= 3.0), launched L s (L/F x), status S s (work W s), verify --offline V s (work X s, mlflow imported: no)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FLOOR = "import dspy, mlflow, dagster, polars"
TARGET = 3.0

_WORK = """
import contextlib, io, json, sys, time
before = set(sys.modules)
preload = json.loads(sys.argv[1])
for name in preload:
    try:
        __import__(name)
    except Exception:
        pass
from teleprompt_assets import cli
began = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    code = cli.main(sys.argv[2:])
seconds = time.perf_counter() - began
print(json.dumps({"seconds": seconds, "code": code, "imported": sorted(set(sys.modules) - before)}))
"""


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TELEPROMPT_", "DAGSTER_"))}
    return env | {"TELEPROMPT_HOME": str(home), "TELEPROMPT_CONFIG": str(REPO / "teleprompt.yaml"), "PYTHONPATH": str(REPO)}


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    began = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"overhead: {' '.join(argv[1:])} exited {done.returncode}: {(done.stderr or done.stdout).strip()[-2000:]}")
    return seconds, done.stdout


def _work(command: list[str], env: dict[str, str]) -> tuple[float, list[str]]:
    """A command's own call after its imports: a first fresh process records what a call imports, a
    second imports that, then times the call."""
    _, out = _timed([sys.executable, "-c", _WORK, "[]", *command], env)
    imported = json.loads(out.strip().splitlines()[-1])["imported"]
    _, out = _timed([sys.executable, "-c", _WORK, json.dumps(imported), *command], env)
    return json.loads(out.strip().splitlines()[-1])["seconds"], imported


def _setup(home: Path, env: dict[str, str]) -> tuple[str, Path]:
    """Seeded home and the first run's summary line (once per ``home``)."""
    teleprompt = str(BIN / "teleprompt")
    marker = home / "overhead-first-run.txt"
    if not marker.exists():
        home.mkdir(parents=True, exist_ok=True)
        _timed([teleprompt, "seed", "--program", "ticket_router", "--days", "7", "--per-day", "40"], env)
        seconds, out = _timed([teleprompt, "run", "--program", "ticket_router"], env)
        print(f"first run: {seconds:.1f} s: {out.strip()}", flush=True)
        marker.write_text(out)
    line = marker.read_text().strip()
    uid = line.rsplit("attestation ", 1)[-1].split(";")[0].strip()
    return line, home / "outbox" / "ticket_router" / uid


def _same_outcome(first: str, again: str) -> None:
    """A re-run measures the same day: the same version and attestation (the run id differs)."""
    def strip(line: str) -> str:
        head, _, rest = line.partition("; ")
        return head.split(": run ")[0] + " " + rest

    if strip(first) != strip(again.strip()):
        raise SystemExit(f"overhead: the re-run's outcome differs from the first run's:\n  {first}\n  {again.strip()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--root", type=Path, default=REPO / ".teleprompt" / "bench" / "overhead")
    args = parser.parse_args(argv)
    home = args.root.resolve()
    env = _env(home)
    first, bundle = _setup(home, env)
    teleprompt = str(BIN / "teleprompt")
    figures: dict[str, list[float]] = {k: [] for k in ("floor", "rerun", "launched", "status", "status_work", "verify", "verify_work")}
    verify_imports: list[str] = []
    for round_ in range(args.rounds):
        figures["floor"].append(_timed([sys.executable, "-c", FLOOR], env)[0])
        seconds, out = _timed([teleprompt, "run", "--program", "ticket_router"], env)
        _same_outcome(first, out)
        figures["rerun"].append(seconds)
        seconds, out = _timed([teleprompt, "run", "--program", "ticket_router", "--launch"], env)
        _same_outcome(first, out)
        figures["launched"].append(seconds)
        figures["status"].append(_timed([teleprompt, "status"], env)[0])
        figures["status_work"].append(_work(["status"], env)[0])
        figures["verify"].append(_timed([teleprompt, "verify", str(bundle), "--offline"], env)[0])
        work, verify_imports = _work(["verify", str(bundle), "--offline"], env)
        figures["verify_work"].append(work)
        print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in figures.items()), flush=True)
    med = {k: statistics.median(v) for k, v in figures.items()}
    mlflow = "yes" if any(m == "mlflow" or m.startswith("mlflow.") for m in verify_imports) else "no"
    ratio = med["rerun"] / med["floor"]
    print(f"overhead: floor {med['floor']:.2f} s, re-run {med['rerun']:.2f} s ({ratio:.2f}x, target <= {TARGET}), "
          f"launched {med['launched']:.2f} s ({med['launched'] / med['floor']:.2f}x), status {med['status']:.2f} s (work {med['status_work']:.2f} s), "
          f"verify --offline {med['verify']:.2f} s (work {med['verify_work']:.2f} s, mlflow imported: {mlflow})")
    return 0 if ratio <= TARGET and mlflow == "no" else 1


if __name__ == "__main__":
    sys.path.append(str(REPO))
    sys.exit(main())
