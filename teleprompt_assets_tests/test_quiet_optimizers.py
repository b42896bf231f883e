"""Every optimizer's run is as quiet as BootstrapFewShot's: ``teleprompt run`` prints its own lines,
whatever the teleprompter logs while it searches (that goes to the step log and the version's
MLflow run, ``compile_log.txt``).

A user's project outside the package: one two-step program (``TriageAndDraft``: classify, then draft
with chain of thought) registered once per optimizer the docs offer, with small budgets; a day of
its traffic served and labelled by an app process through the trace contract; then one ``teleprompt
run --program`` per optimizer, as a user tries them one after another.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from teleprompt_assets.core import identity
from teleprompt_assets_tests.test_program_matrix import MODULE, OPTIMIZERS
from teleprompt_assets_tests.user_programs import traffic

pytestmark = pytest.mark.e2e  # a teleprompt process per optimizer

REPO = Path(__file__).resolve().parents[1]
TELEPROMPT = str(Path(sys.executable).parent / "teleprompt")
DAY = (datetime.now(UTC) - timedelta(days=1)).date()
PER_PROGRAM = 40
MAX_LINES = 5

APP = '''import json, sys
from datetime import datetime
from teleprompt_assets.ingest.tracing import Label, connect_app, label_traces, traced_call

connect_app("support-desk")
labels = []
for call in json.loads(open("traffic.json").read()):
    outputs = {"intent": call["intent"], "reply": call["sent"]}
    trace_id, _ = traced_call(call["program"], call["contributor"], {"email": call["email"], "customer_name": call["customer_name"]},
                              lambda email, customer_name, out=outputs: out, start_time_ns=call["at_ns"])
    labels.append(Label(trace_id, call["contributor"], {"resolved": call["resolved"]}, {"intent": call["intent"], "reply": call["right"]}))
print(label_traces(labels))
'''


def _program(name: str) -> str:
    return f"desk_{name.lower()}"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("desk")
    programs = {_program(name): {"module": f"{MODULE}:TriageAndDraft", "experiment": "support-desk",
                                 "metric": {"kind": "token_f1", "field": "reply"}, "optimizer": {"name": name, "params": params},
                                 "split": {"train": 50, "dev": 10, "holdout": 40, "min_holdout": 5}}
                for name, params in OPTIMIZERS.items()}
    config = {"start_date": (DAY - timedelta(days=30)).isoformat(), "window_days": 1, "programs": programs,
              "trust": {"signers": [identity.DEMO_APP_ADDRESS]}}
    (root / "teleprompt.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    rng = random.Random(7)
    start_ns = int(datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC).timestamp()) * 10**9
    calls = []
    for program in programs:
        for i, ticket in enumerate(traffic.tickets(PER_PROGRAM, rng)):
            right = traffic.REPLIES[ticket.intent].format(name=ticket.customer_name)
            resolved = rng.random() < 0.6
            calls.append({"program": program, "contributor": traffic.CONTRIBUTORS[i % 3], "email": ticket.email,
                          "customer_name": ticket.customer_name, "intent": ticket.intent, "right": right,
                          "sent": right if resolved else traffic.WEAK_REPLY, "resolved": resolved,
                          "at_ns": start_ns + (i + 1) * 60 * 10**9})
    (root / "traffic.json").write_text(json.dumps(calls))
    (root / "app.py").write_text(APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TELEPROMPT_", "DAGSTER_"))}
    env |= {"TELEPROMPT_HOME": str(root / ".teleprompt"), "TELEPROMPT_CONFIG": str(root / "teleprompt.yaml")}
    done = subprocess.run([sys.executable, "app.py"], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip() == str(3 * len(calls)), done.stderr[-3000:]  # resolved, intent, reply
    return root, env


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_a_run_under_each_optimizer_prints_at_most_five_lines(project, optimizer: str):
    root, env = project
    done = subprocess.run([TELEPROMPT, "run", "--program", _program(optimizer), "--date", DAY.isoformat()],
                          cwd=root, env=env, capture_output=True, text=True, timeout=600)
    lines = (done.stdout + done.stderr).splitlines()
    assert done.returncode == 0, "\n".join(lines[-60:])
    summary = [line for line in lines if line.startswith(f"{_program(optimizer)} {DAY}: run ")]
    assert len(summary) == 1 and "held-out examples" in summary[0], "\n".join(lines)
    assert len(lines) <= MAX_LINES, f"{len(lines)} lines:\n" + "\n".join(lines)
