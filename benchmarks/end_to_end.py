"""End-to-end load benchmark: 100,000 traces through the whole graph with the offline LM (not a test).

    .venv/bin/python benchmarks/end_to_end.py                 # 100,000 traces (fixture shared with ingest.py)
    .venv/bin/python benchmarks/end_to_end.py --traces 5000   # quick run

The store is the ingestion benchmark's cached fixture (see benchmarks/ingest.py: one UTC day of
labeled ticket_router traces, 300 written through the real API, the rest SQL copies inside MLflow's
schema). It is copied to a scratch TELEPROMPT_HOME so runs never change the cache; a fresh Dagster
instance there then runs the `optimize_program` job for that day: raw_traces -> curated ->
training_set -> compiled_program -> evaluation_report -> registered_version -> champion_alias ->
contributor_rewards -> deltaone_attestation, exactly as `teleprompt run` does.

It runs with the sample config, ``trust:`` section included, as a user's run does: the fixture's
traces and labels are signed by the DEMO app key it trusts, and the run fails before printing any
figure if curation quarantined or ignored any of them for identity (the accepted and quarantined
counts and the day's identity counts are printed).

Wall time S covers the job alone (not the fixture copy). Peak RSS M is the job process's peak plus
the summed peaks of the ingestion reader processes (VmHWM), an upper bound on what it held at once. Last line: ``e2e: <N> traces, <S> s wall, peak RSS <M> MB``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _peak_mb() -> tuple[float, float]:
    from benchmarks.ingest import reader_peak_mb

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, reader_peak_mb()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=100_000)
    parser.add_argument("--root", type=Path, default=REPO / ".teleprompt" / "bench")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from benchmarks.ingest import DAY, build_fixture, check_run_identity, run_identity

    fixture = build_fixture(args.traces, args.root)
    scratch = args.root / f"e2e-{args.traces}"
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(fixture, scratch)
    os.environ["TELEPROMPT_HOME"] = str(scratch)
    os.environ["DAGSTER_HOME"] = str(scratch / "dagster")
    os.environ["TELEPROMPT_CONFIG"] = str(REPO / "teleprompt.yaml")

    import dagster as dg

    from teleprompt_assets.definitions import build_definitions
    from teleprompt_assets.launch import ensure_dagster_home, run_partition

    ensure_dagster_home(scratch / "dagster")
    defs = build_definitions()
    began = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        out = run_partition(defs, "ticket_router", DAY.isoformat(), instance)
        wall = time.perf_counter() - began
        steps = {}
        for record in instance.all_logs(out["run_id"]):
            event = record.dagster_event
            if event is not None and event.event_type_value == "STEP_SUCCESS":
                steps[event.step_key] = event.event_specific_data.duration_ms / 1000
        identity = run_identity(instance, out["run_id"])
    print(f"identity: {'; '.join(identity['statements'])}")
    print(check_run_identity(identity), flush=True)  # fails here, before any figure, if the trust check refused the fixture
    own, child = _peak_mb()
    read = out["raw_traces"].height
    comparison = out["evaluation_report"]["comparison"]
    print("steps: " + ", ".join(f"{k} {v:.1f} s" for k, v in steps.items()))
    print(f"read {read}, accepted {out['curated_traces'].height}, window rows {out['training_set'].height}, "
          f"holdout scored {comparison['n']}, deltaPpm {comparison['delta_ppm']}, "
          f"version v{out['registered_version']['version']}, attested {out['deltaone_attestation'].get('attested')}")
    print(f"peak RSS: job process {own:.0f} MB, reader processes {child:.0f} MB")
    print(f"e2e: {read} traces, {wall:.1f} s wall, peak RSS {own + child:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
