"""Optimization benchmark (offline LM): held-out gain per program and seed, and LM calls as data grows.

For each sample program and seed, synthetic traffic (the same generators `teleprompt seed` uses) is
turned into a curated-like table in memory — MLflow is not involved, this measures the optimizer —
split, compiled with the program's configured teleprompter and scored against the uncompiled
program on the holdout with the program's metric (exact match, or the outcome model trained on the
train split). Then the compile's LM calls are counted for windows of 1k, 10k and 100k traces:
they must stay flat (bounded by the optimizer's budget), not grow with the data. In those windows every
ticket carries its own reference number (as real tickets do), so they keep ~90% of their rows after
deduplication: the optimizer really is handed 1k, 10k and 100k-row windows.

These are offline-LM figures: they show the pipeline finds and measures a gain; a hosted LM's scores,
calls and costs differ. Run: `.venv/bin/python benchmarks/teleprompters.py [--seeds 3] [--volumes 1000,10000,100000]`.
Last line: `optimize: mean relative gain <G>% over <K> runs (min <m>%), LM calls at 1k/10k/100k: <a>/<b>/<c>`.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from typing import Any

import dspy
import polars as pl

from teleprompt_assets.core.lm import offline_lm
from teleprompt_assets.core.spec import ProgramSpec, load_project
from teleprompt_assets.core.usage import metered
from teleprompt_assets.evaluate import deltaone, scoring
from teleprompt_assets.optimize import teleprompters
from teleprompt_assets.samples import outreach_traffic, ticket_traffic
from teleprompt_assets.training import datasets, metrics

logging.disable(logging.WARNING)


def _row(i: int, program: str, contributor: str, inputs: dict, outputs: dict, feedback: dict, expectations: dict) -> dict[str, Any]:
    return {"trace_id": f"bench-{i}", "timestamp_ms": i, "state": "OK", "experiment_id": "0", "program": program, "contributor": contributor,
            "inputs": json.dumps(inputs), "outputs": json.dumps(outputs), "feedback": json.dumps(feedback),
            "expectations": json.dumps(expectations), "trace_hash": f"0x{i:064x}"}


def traffic(spec: ProgramSpec, n: int, seed: int, distinct: bool = False) -> pl.DataFrame:
    """The demo's traffic as a training table; ``distinct`` tags every ticket with its own reference
    number, as real tickets are, so a window of n traces keeps about n rows after deduplication."""
    rng = random.Random(seed)
    rows = []
    if spec.name == "ticket_router":
        for i, t in enumerate(ticket_traffic.tickets(n, rng)):
            message = f"{t.message} (ticket ref {i:07d})" if distinct else t.message
            if t.label:
                rows.append(_row(i, spec.name, t.contributor.address, {"message": message}, {"queue": "billing"}, {}, {"queue": t.label}))
    else:
        for i, p in enumerate(outreach_traffic.prospects(n, rng)):
            reply = outreach_traffic.sent_reply(p, rng)
            rows.append(_row(i, spec.name, p.contributor.address, {"prospect_message": p.prospect_message, "company": p.company},
                             {"reply": reply}, outreach_traffic.outcomes(reply, p.company, rng), {}))
    return datasets.training_table(pl.DataFrame(rows), spec)


def gain_run(spec: ProgramSpec, n: int, seed: int) -> dict[str, Any]:
    table = traffic(spec, n, seed)
    metric, _ = metrics.window_metric(spec, table)
    lm = offline_lm()
    started = time.perf_counter()
    with metered(lm) as used:
        result = teleprompters.compile_program(spec, datasets.training_examples(table, spec), metric, datasets.examples(table, spec, "dev"))
    compile_s = time.perf_counter() - started
    field = spec.config.metric.field or spec.output_fields[0]
    scores = scoring.score_pair(spec.build(), result.program, datasets.examples(table, spec, "holdout"), metric, offline_lm(), field)
    c = deltaone.compare(scores)
    return {"program": spec.name, "seed": seed, "holdout": c.n, "baseline": c.baseline_mean, "candidate": c.candidate_mean,
            "gain_pct": c.delta_ppm / 10_000, "ci_low_pct": c.ci_low_ppm / 10_000, "lm_calls": used.calls, "compile_s": compile_s}


def calls_at(spec: ProgramSpec, n: int) -> tuple[int, int]:
    """LM calls of one compile on a window of ``n`` traces, and the rows left after dedupe."""
    table = traffic(spec, n, seed=0, distinct=True)
    metric, _ = metrics.window_metric(spec, table)
    lm = offline_lm()
    with metered(lm) as used:
        teleprompters.compile_program(spec, datasets.training_examples(table, spec), metric, datasets.examples(table, spec, "dev"))
    return used.calls, len(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--traces", type=int, default=280, help="traces per run (the demo's week: 7 × 40)")
    parser.add_argument("--volumes", default="1000,10000,100000")
    args = parser.parse_args()
    specs = load_project("teleprompt.yaml")[1]
    runs = []
    for name in ("ticket_router", "outreach_reply"):
        for seed in range(args.seeds):
            run = gain_run(specs[name], args.traces, seed)
            runs.append(run)
            print(f"{name:15} seed {seed}: baseline {run['baseline']:.4f} -> {run['candidate']:.4f} on {run['holdout']} held-out "
                  f"(+{run['gain_pct']:.1f}%, CI low {run['ci_low_pct']:.1f}%), {run['lm_calls']} LM calls, compile {run['compile_s']:.2f} s")
    volumes = [int(v) for v in args.volumes.split(",")]
    calls = []
    for n in volumes:
        started = time.perf_counter()
        counted, rows = calls_at(specs["ticket_router"], n)
        calls.append(counted)
        print(f"ticket_router window of {n} traces ({rows} distinct after dedupe): {counted} LM calls to compile "
              f"({time.perf_counter() - started:.1f} s incl. building the table)")
    gains = [r["gain_pct"] for r in runs]
    print("(offline LM figures)")
    print(f"optimize: mean relative gain {sum(gains) / len(gains):.1f}% over {len(runs)} runs (min {min(gains):.1f}%), "
          f"LM calls at 1k/10k/100k: {'/'.join(str(c) for c in calls)}")


if __name__ == "__main__":
    dspy.disable_logging() if hasattr(dspy, "disable_logging") else None
    main()
