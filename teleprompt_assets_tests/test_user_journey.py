"""A new user's journey, end to end, each step its own process (issue 14).

A support team keeps its own DSPy program in its own package, in a folder that has nothing to do
with this repository, registers it through its own ``teleprompt.yaml`` and logs production traffic
from its own app exactly as the README's trace contract shows, with MLflow's default (asynchronous)
trace export: the app serves the mail of several days with a gap, back-dated, and a second process
labels outcomes and ground truth later. Then the team drives the pipeline only through the
``teleprompt`` commands the README documents. Every step is checked the way the user meets it: the
exit status, the lines printed, and what the registry, the outbox and the Dagster instance hold.

The unit and asset tests prove each part; this one proves that the parts meet where a user stands:
the import path, the config, the environment variables, the CLI's days, the window being filled
although only its last day is run, and the documented answers of the later commands.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import NamedTuple

import pytest

pytestmark = pytest.mark.e2e  # starts servers or separate processes: `make test-e2e`

TELEPROMPT = str(Path(sys.executable).with_name("teleprompt"))
PROGRAM = "acme_router"
MODEL = f"teleprompt-{PROGRAM}"
EXPERIMENT = "acme-support-production"

TODAY = datetime.now(UTC).date()
DAY = TODAY - timedelta(days=1)                  # the run's day: the CLI takes days up to yesterday
START = DAY - timedelta(days=20)                 # the config's start_date
EMPTY_DAY = DAY - timedelta(days=12)             # on/after start_date, its whole window before any traffic
WINDOW = [DAY - timedelta(days=i) for i in reversed(range(7))]
TRAFFIC = {DAY - timedelta(days=5): 26, DAY - timedelta(days=4): 30, DAY - timedelta(days=2): 28,
           DAY - timedelta(days=1): 27, DAY: 29}  # nothing on DAY - 3 (nor DAY - 6): the gap
UNLABELED = 4                                    # served on DAY, outcome known, never given ground truth

CONTRIBUTORS = {
    "emea": "0xC01D323026B791ba5b5f439D936c6a89a2976833",
    "americas": "0xbAbB87856f89bC429dC3ada45bE3812b55c220f4",
    "night-shift": "0x040115C970c7e4fC86B7aE96edAaf09c1707c89C",   # labels carelessly
}
ROTA = ("emea", "americas", "emea", "night-shift", "americas")

ROUTER = '''"""Which Acme team picks up an incoming customer email."""

from typing import Literal

import dspy


class PickTeam(dspy.Signature):
    """Pick the team that should answer a customer's email."""

    email: str = dspy.InputField(desc="the customer's email, verbatim")
    team: Literal["frontdesk", "payments", "logistics", "engineering", "retention"] = dspy.OutputField()


class Router(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pick = dspy.Predict(PickTeam)

    def forward(self, email: str) -> dspy.Prediction:
        return self.pick(email=email)
'''

CONFIG = f"""# Acme's programs, optimized by teleprompt-assets (its shipped teleprompt.yaml was the template)
start_date: {START.isoformat()}
window_days: 7

programs:
  {PROGRAM}:
    module: acme_support.router:Router
    experiment: {EXPERIMENT}
    metric:
      kind: exact_match
      field: team
    optimizer:
      name: BootstrapFewShot
      params:
        max_bootstrapped_demos: 4
        max_labeled_demos: 24
    outcomes: [resolved, csat]
    split: {{train: 50, dev: 10, holdout: 40}}

quality:
  max_contributor_share: 0.5
"""

# The app, as the README's trace-contract example writes one: it serves the mail and keeps the trace ids.
APP = f'''import json
import os
from datetime import datetime

import dspy
import mlflow

from teleprompt_assets.ingest.tracing import connect_app, traced_call
from teleprompt_assets.core.lm import build_lm

from acme_support.router import Router

connect_app("{EXPERIMENT}")
mlflow.dspy.autolog()
dspy.configure(lm=build_lm())

program = Router()
served = []
for mail in json.loads(open("mailbox.json").read()):
    when = datetime.fromisoformat(mail["received_at"])
    trace_id, outputs = traced_call("{PROGRAM}", mail["contributor"], {{"email": mail["email"]}}, program,
                                    start_time_ns=int(when.timestamp()) * 10**9)
    served.append(mail | {{"trace_id": trace_id, "team": outputs["team"]}})
open("served.json", "w").write(json.dumps(served))
assert "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING" not in os.environ
'''

# Outcomes arrive later, in another process that has the trace ids (README: "in this process, or in another one").
LABELER = f'''import json

from teleprompt_assets.ingest.tracing import connect_app, label_trace

connect_app("{EXPERIMENT}")
for call in json.loads(open("served.json").read()):
    resolved = call["team"] == call["true_team"]
    label_trace(call["trace_id"], call["contributor"],
                feedback={{"resolved": resolved, "csat": call["csat_if_resolved"] if resolved else call["csat_if_not"]}},
                expectations={{"team": call["label"]}} if call["label"] else None)
'''

TEMPLATES = {
    "frontdesk": ("What are the opening hours of store {n}?", "Who handles general questions like ticket {n}?",
                  "Can I visit the office with voucher {n} on Saturday?"),
    "payments": ("My card was charged twice for invoice {n}.", "Why is there an extra fee on bill {n}?",
                 "The payment for invoice {n} failed at checkout."),
    "logistics": ("Parcel {n} is stuck at the depot since Monday.", "The courier lost box {n} on the way to me.",
                  "Can you redirect shipment {n} to my neighbour?"),
    "engineering": ("The mobile app freezes on the login screen, build {n}.", "Sync error {n} shows up after the update.",
                    "Dashboard widgets stay blank since release {n}."),
    "retention": ("I want to end my contract {n} next month.", "Thinking about leaving for a competitor, account {n}.",
                  "Please stop auto renewal of membership {n}."),
}


def mailbox() -> list[dict]:
    """The mail the app serves, in arrival order. Only a few templates name their team, so the
    uncompiled router (the offline LM's zero-shot rule) gets about a quarter right, while demos of
    the same templates get most right; the night shift's labels are wrong one time in four."""
    rng = random.Random(14)
    mails, n = [], 4100
    for day, count in sorted(TRAFFIC.items()):
        for i in range(count + (UNLABELED if day == DAY else 0)):
            n += 7
            team = rng.choice(sorted(TEMPLATES))
            who = ROTA[len(mails) % len(ROTA)]
            label = team if who != "night-shift" or rng.random() >= 0.25 else rng.choice([t for t in TEMPLATES if t != team])
            mails.append({
                "received_at": (datetime.combine(day, dtime(8), tzinfo=UTC) + timedelta(minutes=16 * i)).isoformat(),
                "email": rng.choice(TEMPLATES[team]).format(n=n), "contributor": CONTRIBUTORS[who], "true_team": team,
                "label": None if i >= count else label, "csat_if_resolved": rng.choice((0.8, 0.9, 1.0)), "csat_if_not": rng.choice((0.2, 0.3, 0.5)),
            })
    return mails


class Done(NamedTuple):
    code: int
    out: list[str]
    err: list[str]
    seconds: float


class Registry(NamedTuple):
    versions: list[int]
    champion: int | None
    uids: list[str]
    bundles: dict[str, str]   # outbox file -> sha256


class Journey(NamedTuple):
    project: Path
    home: Path
    dagster_home: Path
    steps: dict[str, Done]
    state: dict[str, Registry]
    mails: list[dict]


def _env(project: Path) -> dict[str, str]:
    """What the team exports: its home, its Dagster home, its config and its package on the path;
    nothing of MLflow's (its defaults, asynchronous export included)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TELEPROMPT_", "DAGSTER_"))}
    path = os.pathsep.join(p for p in (str(project), env.get("PYTHONPATH", "")) if p)
    return env | {"TELEPROMPT_HOME": str(project / ".teleprompt"), "DAGSTER_HOME": str(project / "dagster_home"),
                  "TELEPROMPT_CONFIG": str(project / "teleprompt.yaml"), "PYTHONPATH": path}


def _registry(home: Path) -> Registry:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    store = f"sqlite:///{home / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)  # explicit: an earlier test may have set MLflow's global registry URI
    versions = client.search_model_versions(f"name = '{MODEL}'")
    try:
        current = client.get_model_version_by_alias(MODEL, "champion")
    except MlflowException:
        current = None
    outbox = home / "outbox" / PROGRAM
    files = sorted(p for p in outbox.rglob("*") if p.is_file()) if outbox.exists() else []
    return Registry(sorted(int(v.version) for v in versions), int(current.version) if current else None,
                    sorted(v.tags["attestation_uid"] for v in versions if v.tags.get("attestation_uid")),
                    {str(p.relative_to(outbox)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files})


@pytest.fixture(scope="module")
def journey(tmp_path_factory: pytest.TempPathFactory) -> Journey:
    """The whole journey, in order; the tests below check one step each."""
    project = tmp_path_factory.mktemp("acme")
    (project / "acme_support").mkdir()
    (project / "acme_support" / "__init__.py").write_text('"""Acme support\'s own DSPy programs."""\n')
    (project / "acme_support" / "router.py").write_text(ROUTER)
    (project / "teleprompt.yaml").write_text(CONFIG)
    (project / "app.py").write_text(APP)
    (project / "label_outcomes.py").write_text(LABELER)
    mails = mailbox()
    (project / "mailbox.json").write_text(json.dumps(mails))
    env = _env(project)
    home = project / ".teleprompt"
    steps: dict[str, Done] = {}
    state: dict[str, Registry] = {}

    def call(step: str, *argv: str) -> Done:
        started = time.perf_counter()
        done = subprocess.run(list(argv), cwd=project, env=env, capture_output=True, text=True, timeout=600)
        steps[step] = Done(done.returncode, done.stdout.splitlines(), done.stderr.splitlines(), time.perf_counter() - started)
        return steps[step]

    for step, script in (("app", "app.py"), ("labeler", "label_outcomes.py")):
        done = call(step, sys.executable, script)
        assert done.code == 0, "\n".join(done.err[-40:])
    call("status before", TELEPROMPT, "status", "--json")
    call("run", TELEPROMPT, "run", "--program", PROGRAM, "--date", DAY.isoformat())
    state["run"] = _registry(home)
    status = call("status json", TELEPROMPT, "status", "--json")
    [info] = json.loads("\n".join(status.out)) if status.code == 0 else [{}]
    bundle = str(home / "outbox" / PROGRAM / str(info.get("last_attestation")))
    with ThreadPoolExecutor(max_workers=2) as pool:
        checks = [pool.submit(call, "status", TELEPROMPT, "status"),
                  pool.submit(call, "verify", TELEPROMPT, "verify", bundle, "--signer", str(info.get("attester"))),
                  pool.submit(call, "verify, another signer", TELEPROMPT, "verify", bundle, "--signer", CONTRIBUTORS["emea"])]
        checks += [pool.submit(call, f"proof {who}", TELEPROMPT, "proof", address, "--program", PROGRAM) for who, address in CONTRIBUTORS.items()]
        for check in checks:
            check.result()
    call("run, empty window", TELEPROMPT, "run", "--program", PROGRAM, "--date", EMPTY_DAY.isoformat())
    state["run, empty window"] = _registry(home)
    call("run again", TELEPROMPT, "run", "--program", PROGRAM, "--date", DAY.isoformat())
    state["run again"] = _registry(home)
    call("rollback", TELEPROMPT, "rollback", PROGRAM)
    state["rollback"] = _registry(home)
    return Journey(project, home, project / "dagster_home", steps, state, mails)


RUN_LINE = re.compile(rf"^{PROGRAM} {DAY}: run (?P<run>[0-9a-f-]{{36}}); (?P<b>\d\.\d{{4}}) -> (?P<c>\d\.\d{{4}}) on (?P<n>\d+) held-out examples, "
                      rf"deltaPpm (?P<ppm>\d+), DeltaOne yes; {MODEL} v1 @champion; attestation (?P<uid>0x[0-9a-f]{{64}})$")


def labeled(day: date | None = None) -> int:
    return sum(count for d, count in TRAFFIC.items() if day is None or d == day)


def _clean(done: Done) -> None:
    assert not any("Traceback" in line for line in done.out + done.err), "\n".join(done.err[-40:])


def _run_line(done: Done) -> re.Match:
    _clean(done)
    assert done.code == 0, "\n".join(done.err[-40:])
    assert len(done.out) == 1, done.out
    found = RUN_LINE.match(done.out[0])
    assert found, done.out[0]
    return found


def test_the_app_logs_its_traffic_with_mlflows_defaults(journey):
    """Served by one process, labeled by another, into the store and experiment the config names,
    with payloads under TELEPROMPT_HOME (never ./mlruns)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{journey.home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert Path(experiment.artifact_location.removeprefix("file://")).is_relative_to(journey.home / "artifacts")
    assert not (journey.project / "mlruns").exists()
    assert all(not done.out for done in (journey.steps["app"], journey.steps["labeler"]))
    stored = client.search_traces(locations=[experiment.experiment_id], max_results=500, include_spans=False)
    assert len(stored) == len(journey.mails) == labeled() + UNLABELED
    with_truth = [t for t in stored if any(a.name == "team" for a in t.info.assessments)]
    assert len(with_truth) == labeled()


def test_status_before_the_first_run_counts_the_pending_traffic(journey):
    done = journey.steps["status before"]
    _clean(done)
    assert done.code == 0, done.err
    [info] = json.loads("\n".join(done.out))
    assert (info["program"], info["model"], info["versions"], info["champion"]) == (PROGRAM, MODEL, 0, None)
    assert info["pending_traces"] == len(journey.mails)


def test_the_first_run_registers_promotes_and_attests(journey):
    """``teleprompt run`` prints where it runs, one summary line and its time; the candidate beats
    the uncompiled program on at least min_holdout (20) held-out examples."""
    done = journey.steps["run"]
    found = _run_line(done)
    assert done.err[0].startswith(f"optimizing {PROGRAM} for {DAY} in one Dagster run in this process (instance {journey.dagster_home})"), done.err
    assert re.fullmatch(r"done in \d+ s", done.err[-1]) and len(done.err) <= 3, done.err
    assert float(found["c"]) > float(found["b"]) and int(found["n"]) >= 20 and int(found["ppm"]) >= 10_000
    assert journey.state["run"].versions == [1] and journey.state["run"].champion == 1
    assert journey.state["run"].uids == [found["uid"]]


def test_the_run_came_from_the_code_location_the_ui_serves(journey):
    """Issue 18: ``teleprompt run`` launches from ``workspace.yaml``'s code location, as the UI and
    the daemon do, so Dagster's "Re-execute" finds the run's job instead of warning that it came
    from somewhere else. (Before, the run had only a Python origin: no location, no repository.)"""
    import dagster as dg
    import yaml

    run_id = _run_line(journey.steps["run"])["run"]
    served = yaml.safe_load((Path(__file__).resolve().parents[1] / "workspace.yaml").read_text())["load_from"][0]["python_module"]
    with dg.DagsterInstance.from_config(str(journey.dagster_home)) as instance:
        run = instance.get_run_by_id(run_id)
    origin = run.remote_job_origin
    assert origin is not None and origin.location_name == served["location_name"], origin
    assert origin.repository_origin.repository_name == "__repository__" and origin.job_name == run.job_name


def test_the_run_trained_on_its_whole_window_not_only_its_day(journey):
    """Only DAY was run, yet the window's earlier days were ingested and curated by that run (days
    without traffic included), and its holdout alone is larger than all of DAY's traffic."""
    import dagster as dg

    run_id = _run_line(journey.steps["run"])["run"]
    key = f"{DAY}|{PROGRAM}"
    with dg.DagsterInstance.from_config(str(journey.dagster_home)) as instance:
        done = {}
        for entry in instance.all_logs(run_id):
            event = entry.dagster_event
            if event and event.event_type_value == "ASSET_MATERIALIZATION":
                mat = event.event_specific_data.materialization
                done[(mat.asset_key.path[-1], mat.partition)] = {k: v.value for k, v in mat.metadata.items()}
    for day in WINDOW[:-1]:
        curated = done[("curated_traces", f"{day}|{PROGRAM}")]
        assert curated["filled_for"] == key
        assert (curated["read"], curated["accepted"], curated["quarantined"]) == (labeled(day), labeled(day), 0), (day, curated)
    assert done[("quarantined_traces", key)]["quarantined"] == UNLABELED
    assert done[("quarantined_traces", key)]["reasons"] == {"no_ground_truth": UNLABELED}
    window = done[("training_set", key)]
    assert window["window"] == f"{WINDOW[0]}..{DAY}" and window["days_filled"] == 6
    assert window["rows"] == labeled()
    n = int(_run_line(journey.steps["run"])["n"])
    assert window["holdout_rows"] == n > labeled(DAY)


def test_status_shows_the_champion_and_its_attestation(journey):
    found = _run_line(journey.steps["run"])
    text = journey.steps["status"]
    _clean(text)
    assert text.code == 0
    shown = dict(line.split(None, 1) for line in text.out)
    assert (shown["program"], shown["champion"], shown["versions"]) == (PROGRAM, "1", "1")
    [info] = json.loads("\n".join(journey.steps["status json"].out))
    scalars = ("program", "model", "versions", "champion", "champion_window", "last_run", "last_attestation", "attester", "pending_traces")
    assert {k: shown[k] for k in scalars} == {k: str(info[k]) for k in scalars}
    assert info["champion_window"] == f"{WINDOW[0]}..{DAY}" and info["last_window_end"] == DAY.isoformat()
    assert info["last_attestation"] == found["uid"] and info["last_run"] == found["run"]
    assert champion_means(info["champion_scores"]) == (found["b"], found["c"], int(found["n"]))
    assert str(info["champion_delta_ppm"]) == found["ppm"]
    assert re.fullmatch(r"0x[0-9a-fA-F]{40}", info["attester"]) and info["attester"] not in CONTRIBUTORS.values()
    assert info["pending_traces"] == 0


def champion_means(scores: dict | str) -> tuple[str, str, int]:
    """``status --json``'s champion_scores as the run line prints them: both held-out means and their
    count (the field held the sums, ``B -> C over n``, before it held the means)."""
    if isinstance(scores, dict):
        return f"{scores['baseline_mean']:.4f}", f"{scores['candidate_mean']:.4f}", scores["eval_count"]
    b, c, n = map(int, re.fullmatch(r"(\d+) -> (\d+) over (\d+)", scores).groups())
    return f"{b / (n * 10**6):.4f}", f"{c / (n * 10**6):.4f}", n


def test_the_bundle_in_the_outbox_verifies_for_its_attester_only(journey):
    uid = _run_line(journey.steps["run"])["uid"]
    done = journey.steps["verify"]
    _clean(done)
    assert done.code == 0, done.out + done.err
    assert done.out == [f"OK {uid}: signature, uid, roots, DeltaOne arithmetic and program hash (bundle and registered model) verify"]
    other = journey.steps["verify, another signer"]
    _clean(other)
    assert other.code == 1 and other.out and all(line.startswith("FAIL ") for line in other.out), other.out + other.err


def test_every_contributor_gets_a_weight_and_a_proof_of_it(journey):
    """Weights are integers summing to exactly 1,000,000 and each proof opens the bundle's rewards
    root; the careless, smaller night shift weighs least."""
    from teleprompt_assets.attest.merkle import StandardMerkleTree, verify_proof

    uid = _run_line(journey.steps["run"])["uid"]
    tree = StandardMerkleTree.load(json.loads((journey.home / "outbox" / PROGRAM / uid / "rewards_tree.json").read_text()))
    weights = {}
    for who, address in CONTRIBUTORS.items():
        done = journey.steps[f"proof {who}"]
        _clean(done)
        assert done.code == 0, done.err
        proof = json.loads("\n".join(done.out))
        assert (proof["program"], proof["modelVersion"], proof["attestationUid"], proof["account"]) == (PROGRAM, 1, uid, address)
        assert proof["rewardsRoot"] == tree.root
        assert verify_proof(proof["rewardsRoot"], proof["leafEncoding"], [address, proof["weightPpm"]], proof["proof"])
        parts = proof["components"]  # why it earned what it earned
        assert parts["traces"] > 0 and 0 < parts["labelFactorPpm"] <= 1_000_000 and parts["volumePpm"] > 0 and "volume" in parts["formula"], parts
        weights[who] = proof["weightPpm"]
    assert sum(weights.values()) == 1_000_000 and all(w > 0 for w in weights.values()), weights
    assert weights["night-shift"] < min(weights["emea"], weights["americas"]), weights


def test_a_day_whose_window_has_no_traffic_registers_nothing(journey):
    done = journey.steps["run, empty window"]
    _clean(done)
    assert done.code == 0, done.err[-40:]
    first = EMPTY_DAY - timedelta(days=6)
    assert re.fullmatch(rf"{PROGRAM} {EMPTY_DAY}: run [0-9a-f-]{{36}}; nothing to optimize: the window {first}\.\.{EMPTY_DAY} "
                        r"has no training examples; nothing compiled or registered", done.out[0]) and len(done.out) == 1, done.out
    assert journey.state["run, empty window"] == journey.state["run"]


def test_running_the_day_again_reproduces_it(journey):
    """Same version, same scores, same attestation, the outbox byte for byte: nothing new."""
    first, again = _run_line(journey.steps["run"]), _run_line(journey.steps["run again"])
    assert again["run"] != first["run"]
    assert {k: v for k, v in again.groupdict().items() if k != "run"} == {k: v for k, v in first.groupdict().items() if k != "run"}
    assert journey.state["run again"] == journey.state["run"]
    assert len({name.split("/")[0] for name in journey.state["run again"].bundles}) == 1


def test_rollback_of_a_first_champion_is_refused_and_changes_nothing(journey):
    """The README: rollback moves the champion back to the version it replaced; v1 replaced none
    (the uncompiled program is not a version), so the command refuses in one line, says how to pick
    a version, and the champion stays. Status 1 (a refused rollback) or 2 (a wrong input, the README's
    rule for refusals before anything runs): the README names neither for this case."""
    done = journey.steps["rollback"]
    _clean(done)
    assert done.code in (1, 2) and not done.out, done.out + done.err
    assert len(done.err) == 1 and MODEL in done.err[0] and "v1" in done.err[0] and "--to" in done.err[0], done.err
    assert journey.state["rollback"] == journey.state["run"]

