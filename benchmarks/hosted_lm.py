"""The whole graph against an OpenAI-compatible server over HTTP, at concurrency K and at 1 (not a test).

    .venv/bin/python benchmarks/hosted_lm.py                          # 8 days x 80 traces, 300 ms a call, K = 16
    .venv/bin/python benchmarks/hosted_lm.py --latency-ms 100 --per-day 40
    .venv/bin/python benchmarks/hosted_lm.py --fixture 100000 --concurrency 32   # the 100k fixture, whole graph at K only

The server is ``teleprompt_assets/samples/lm_server.py`` in its own process, answering with the
offline learner after ``--latency-ms``; the pipeline reaches it through DSPy's client exactly as it
would a hosted provider (``TELEPROMPT_LM=openai/...``, ``TELEPROMPT_LM_API_BASE``).

Default mode. ticket_router traffic is seeded for ``--days`` days through the real trace contract
(the last day is "the next day"). Two copies of that store run the ``optimize_program`` job for
the day before the last, one at ``lm.concurrency = K`` and one at 1: same traces, same holdout,
same calls. The figures are the LM-bound steps' time (compile, evaluation, rewards; the rest of the
graph does not touch the LM and is printed separately). Each seeded ticket carries a reference
number: the sample's templates repeat, and a window keeps one example per distinct input, which
would leave ~40 held-out examples and a next day with nothing new. Then the K store runs the next day, whose
window has one new day of traffic, with the champion unchanged between the two runs; the
evaluation's ``baseline_answers_reused`` over its held-out count is the reuse. Every run curates with
the sample config's ``trust:`` section, as a user's does; each prints its read, accepted and
quarantined counts, and a run that quarantined or ignored any signed trace or label for identity
stops the benchmark before its figures. Last line:

    hosted: <N> traces, latency <L> ms, concurrency <K>: <S> s vs <S1> s at concurrency 1 (<R>x), next day reused <U>% of baseline answers

``--fixture N`` runs the whole graph once on the ingestion benchmark's one-day fixture of N traces
(benchmarks/ingest.py) at concurrency K, for the 100k figure. Last line:
``hosted: <N> traces, latency <L> ms, concurrency <K>: whole graph <S> s``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PROGRAM = "ticket_router"
END = date(2026, 5, 12)  # the next day; the first run optimizes the day before
LM_STEPS = ("compile_program", "evaluate_program", "reward_program")


def start_server(latency_ms: float, *options: str) -> tuple[subprocess.Popen, str]:
    """The sample LM server in a process of its own (``options``: more of its flags, e.g. faults); its URL."""
    server = subprocess.Popen([sys.executable, "-m", "teleprompt_assets.samples.lm_server", "--port", "0", "--latency-ms", str(latency_ms), *options],
                              stdout=subprocess.PIPE, text=True, cwd=REPO)
    line = server.stdout.readline()
    url = next((word for word in line.split() if word.startswith("http")), None)
    if url is None:
        server.kill()
        raise SystemExit(f"the LM server did not start: {line!r}")
    return server, url.rstrip("/")


def write_config(path: Path, concurrency: int, impact_budget: int) -> Path:
    config = yaml.safe_load((REPO / "teleprompt.yaml").read_text())
    config["programs"] = {PROGRAM: config["programs"][PROGRAM]}
    config["rewards"] = {"impact_budget": impact_budget}
    config["lm"] = {"concurrency": concurrency, "cache": "on"}
    path.write_text(yaml.safe_dump(config))
    return path


def use_home(home: Path, config: Path) -> None:
    os.environ["TELEPROMPT_HOME"] = str(home)
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    os.environ["TELEPROMPT_CONFIG"] = str(config)


def seed(home: Path, days: int, per_day: int) -> None:
    import dataclasses

    import mlflow

    from teleprompt_assets.core.settings import load_settings
    from teleprompt_assets.core.spec import load_project
    from teleprompt_assets.samples import seed as seeding
    from teleprompt_assets.samples.ticket_traffic import tickets

    def distinct_tickets(count, rng, label_rate=0.9):
        """The sample's tickets repeat a few hundred templates, and a window keeps one example per
        distinct input; a reference number makes each ticket its own, as production traffic is."""
        for ticket in tickets(count, rng, label_rate):
            yield dataclasses.replace(ticket, message=f"{ticket.message} (ref {rng.randrange(10**8):08d})")

    settings = load_settings()
    spec = load_project(settings.config_path)[1][PROGRAM]
    autolog, generator = mlflow.dspy.autolog, seeding.tickets
    mlflow.dspy.autolog = lambda *a, **k: None  # root spans only: what the pipeline reads
    seeding.tickets = distinct_tickets
    try:
        seeding.seed_ticket_router(settings, spec, END, days=days, per_day=per_day, seed=0)
    finally:
        mlflow.dspy.autolog, seeding.tickets = autolog, generator


def run(day: date) -> dict:
    """One optimize_program run in this process; step seconds from the run's events, and the
    evaluation's result. A candidate the no_regression check keeps out of serving fails the run
    after the evaluation; that is a result here, not an error."""
    import dagster as dg

    from benchmarks.ingest import check_run_identity, run_identity
    from teleprompt_assets.definitions import OPTIMIZE_JOB, build_definitions
    from teleprompt_assets.launch import ensure_dagster_home, key_of

    ensure_dagster_home(Path(os.environ["DAGSTER_HOME"]))
    job = build_definitions().resolve_job_def(OPTIMIZE_JOB)
    began = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(instance=instance, partition_key=key_of(PROGRAM, day.isoformat()), raise_on_error=False)
        wall = time.perf_counter() - began
        steps = {e.step_key: e.event_specific_data.duration_ms / 1000 for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}
        failed = [e.step_key for e in result.all_events if e.is_step_failure]
        if "evaluation_report.collect" not in " ".join(steps) and not any(k.startswith("evaluation_report") for k in steps):
            raise SystemExit(f"run for {day} failed before its evaluation: {failed}")
        records = instance.fetch_materializations(dg.AssetKey("evaluation_report"), limit=1).records
        metadata = {k: v.value for k, v in records[0].asset_materialization.metadata.items()}
        rows = instance.fetch_materializations(dg.AssetKey("training_set"), limit=1).records[0].asset_materialization.metadata
        identity = check_run_identity(run_identity(instance, result.run_id))  # no figures from a run that refused its traces
    lm_s = sum(v for k, v in steps.items() if any(k.split(".")[-1].startswith(s) for s in LM_STEPS))
    return {"wall": wall, "lm_s": lm_s, "steps": steps, "failed": failed, "evaluation": metadata,
            "rows": {k: v.value for k, v in rows.items()}, "identity": identity}


def describe(label: str, result: dict) -> str:
    ev = result["evaluation"]
    failed = f" (run stopped at {', '.join(result['failed'])})" if result["failed"] else ""
    return (f"{label}: {result['identity']}\n"
            f"{label}: LM-bound steps {result['lm_s']:.1f} s of {result['wall']:.1f} s wall{failed}; held-out {ev.get('holdout')}, "
            f"deltaPpm {ev.get('delta_ppm')}, evaluation lm_calls {ev.get('lm_calls')}, reused {ev.get('answers_reused')} "
            f"(baseline {ev.get('baseline_answers_reused')}), retries {ev.get('lm_retries')}; "
            + ", ".join(f"{k.split('[')[0]} {v:.1f} s" for k, v in result["steps"].items() if v >= 0.5))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=300.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--days", type=int, default=8, help="seeded days; the window is 7, the last day is the next day")
    parser.add_argument("--per-day", type=int, default=80)
    parser.add_argument("--impact-budget", type=int, default=400, help="rewards.impact_budget (LM calls of the leave-one-out impact)")
    parser.add_argument("--fixture", type=int, default=None, help="run the whole graph once on the ingestion fixture of this many traces")
    parser.add_argument("--root", type=Path, default=REPO / ".teleprompt" / "bench")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    server, url = start_server(args.latency_ms)
    os.environ["MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"] = "false"
    hosted = {"TELEPROMPT_LM": "openai/nearest-demo", "TELEPROMPT_LM_API_BASE": url}
    os.environ.setdefault("TELEPROMPT_ATTESTER_KEY", "0x" + "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")
    try:
        if args.fixture:
            return whole_graph(args, hosted)
        return compare(args, hosted)
    finally:
        server.terminate()
        server.wait(timeout=10)


def compare(args: argparse.Namespace, hosted: dict[str, str]) -> int:
    scratch = args.root / "hosted"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    seeded = scratch / "seeded"
    use_home(seeded, write_config(scratch / "seed.yaml", 1, args.impact_budget))
    began = time.perf_counter()
    seed(seeded, args.days, args.per_day)
    print(f"seeded {args.days} days x {args.per_day} traces in {time.perf_counter() - began:.0f} s (the app's own calls: offline LM)")
    os.environ |= hosted
    day = END - timedelta(days=1)
    results = {}
    for k in (args.concurrency, 1):
        home = scratch / f"k{k}"
        shutil.copytree(seeded, home)
        use_home(home, write_config(scratch / f"k{k}.yaml", k, args.impact_budget))
        results[k] = run(day)
        print(describe(f"day {day}, concurrency {k}", results[k]))
    use_home(scratch / f"k{args.concurrency}", scratch / f"k{args.concurrency}.yaml")
    next_day = run(END)
    print(describe(f"next day {END}, concurrency {args.concurrency}", next_day))
    s, s1 = results[args.concurrency]["lm_s"], results[1]["lm_s"]
    held_out = next_day["evaluation"]["holdout"]
    reused = 100 * next_day["evaluation"]["baseline_answers_reused"] / held_out
    traces = args.days * args.per_day
    print(f"hosted: {traces} traces, latency {args.latency_ms:g} ms, concurrency {args.concurrency}: {s:.1f} s vs {s1:.1f} s at concurrency 1 "
          f"({s1 / s:.1f}x), next day reused {reused:.0f}% of baseline answers")
    return 0


def whole_graph(args: argparse.Namespace, hosted: dict[str, str]) -> int:
    from benchmarks.ingest import DAY, build_fixture

    fixture = build_fixture(args.fixture, args.root)
    scratch = args.root / f"hosted-{args.fixture}"
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(fixture, scratch)
    config = yaml.safe_load((REPO / "teleprompt.yaml").read_text())
    config["lm"] = {"concurrency": args.concurrency}
    path = args.root / f"hosted-{args.fixture}.yaml"
    path.write_text(yaml.safe_dump(config))
    use_home(scratch, path)
    os.environ |= hosted
    result = run(DAY)
    print(describe(f"day {DAY}, concurrency {args.concurrency}", result))
    print(f"hosted: {args.fixture} traces, latency {args.latency_ms:g} ms, concurrency {args.concurrency}: whole graph {result['wall']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
