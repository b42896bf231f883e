"""Labelling throughput: label_trace per call against label_traces for a burst (not a test).

    .venv/bin/python benchmarks/labelling.py              # 40 calls per side
    .venv/bin/python benchmarks/labelling.py --calls 200

An app serves ``--calls`` ticket_router calls through ``traced_call`` (offline LM, a fresh sqlite
store, MLflow's default asynchronous trace export) and labels them, two ways, each on calls of its
own: each call labelled right after it with ``label_trace`` (the trace is still in MLflow's export
queue, so every label drains it), and the calls served first, then labelled together with one
``label_traces`` (one drain). The times cover serving and labelling. Last line:

    labelling: <N> calls, one by one <a> s (<x>/s), batch <b> s (<y>/s), <r>x
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _serve(program, who: str, n: int, offset: int) -> list[str]:
    import dspy

    from teleprompt_assets.core.lm import offline_lm
    from teleprompt_assets.ingest.tracing import traced_call

    with dspy.context(lm=offline_lm()):
        return [traced_call("ticket_router", who, {"message": f"My parcel {offset + i} never arrived"}, lambda message: program(message=message))[0]
                for i in range(n)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=40)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    home = Path(tempfile.mkdtemp(prefix="tp-labelling-"))
    os.environ["TELEPROMPT_HOME"] = str(home)
    os.environ["TELEPROMPT_CONFIG"] = str(REPO / "teleprompt.yaml")
    os.environ.pop("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", None)  # MLflow's default, as an app has it
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        os.environ.pop(var, None)

    from teleprompt_assets.ingest.tracing import Label, connect_app, label_trace, label_traces
    from teleprompt_assets.samples.ticket_router import TicketRouter
    from teleprompt_assets.samples.ticket_traffic import contributor_address

    connect_app("teleprompt-production")
    program, who = TicketRouter(), contributor_address("acme-support")
    _serve(program, who, 2, 10_000)  # warm-up: imports, the store's tables, the exporter
    began = time.perf_counter()
    for i in range(args.calls):
        [trace_id] = _serve(program, who, 1, i)
        label_trace(trace_id, who, {"resolved_first_touch": True}, {"queue": "shipping"})
    one = time.perf_counter() - began
    began = time.perf_counter()
    ids = _serve(program, who, args.calls, args.calls)
    label_traces([Label(trace_id, who, {"resolved_first_touch": True}, {"queue": "shipping"}) for trace_id in ids])
    batch = time.perf_counter() - began
    print(f"labelling: {args.calls} calls, one by one {one:.1f} s ({args.calls / one:.1f}/s), batch {batch:.1f} s ({args.calls / batch:.1f}/s), {one / batch:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
