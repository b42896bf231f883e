"""Identity against whoever can write the tracking store (issue 25, item 1): no reward moves.

A real sqlite MLflow store holds three days of ``ticket_router`` traffic logged and labelled through
the trace contract (``traced_call`` / ``label_trace`` sign with the app key, here the public demo key
the sample ``teleprompt.yaml`` registers). Each attack is played on a copy of that store by a writer
with full access to it and no app key, exactly as issue 25 played it:

- re-tagging a contributor's traces to another address (``set_trace_tag``);
- re-logging a victim's traces under another address 1 ms earlier, labels copied (half of the
  copies also carry the victim's signature tag), to be the "first submitter";
- re-labelling a victim's traces: wrong ground truth and outcomes, unsigned, signed by the writer's
  own key, and overriding the signed labels (``override_feedback``).

Then the real pipeline runs the day through Dagster with a fresh instance (so every day of the
window is ingested and curated from the attacked store), up to ``contributor_rewards``. With the
``trust:`` section every address's weight is the one it had before the attack (0 ppm moved); without
it (the pipeline before issue 25) the same attack moves reward, which shows the attack is real.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import pytest
import yaml
from eth_account import Account
from eth_utils import keccak
from mlflow import MlflowClient

from teleprompt_assets.core import identity
from teleprompt_assets.ingest.tracing import CONTRIBUTOR_TAG, PROGRAM_TAG, SIGNATURE_TAG
from teleprompt_assets.samples.ticket_traffic import CONTRIBUTORS, contributor_address
from teleprompt_assets_tests.conftest import REPO
from teleprompt_assets_tests.reliability import environment, single

END = date(2026, 11, 20)
DAYS = 3
PER_DAY = 24
PROGRAM = "ticket_router"
VICTIM = next(c.address for c in CONTRIBUTORS if c.name == "globex-helpdesk")
ACCOMPLICE = next(c.address for c in CONTRIBUTORS if c.name == "initech-care")  # an existing contributor who gains what the victim loses
MALLORY = contributor_address("mallory")  # a fresh address
MALLORY_KEY = "0x" + keccak(text="teleprompt-test: mallory's own key").hex()
STEPS = ["raw_traces", "curated_traces", "quarantined_traces", "training_set", "compiled_program", "evaluation_report", "contributor_rewards"]


def _config(dest: Path, trust: bool) -> Path:
    """The sample config (with its trust section, or without it) and a quick, deterministic compile."""
    config = yaml.safe_load((REPO / "teleprompt.yaml").read_text())
    config["programs"][PROGRAM]["optimizer"] = {"name": "BootstrapFewShot", "params": {"max_bootstrapped_demos": 2, "max_labeled_demos": 8}}
    if not trust:
        config.pop("trust")
    path = dest / f"teleprompt-{'trust' if trust else 'no-trust'}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _env(home: Path, config: Path) -> dict[str, str]:
    return {"TELEPROMPT_HOME": str(home), "TELEPROMPT_CONFIG": str(config), "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING": "false", "TELEPROMPT_LM_RETRIES": "0"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The seeded store, both configs and the rewards each gives before any attack."""
    from teleprompt_assets.core.settings import load_settings
    from teleprompt_assets.core.spec import load_project
    from teleprompt_assets.samples.seed import seed_ticket_router

    root = tmp_path_factory.mktemp("identity")
    configs = {True: _config(root, True), False: _config(root, False)}
    home = root / "seeded"
    with environment(_env(home, configs[True])), pytest.MonkeyPatch.context() as patch:
        patch.setattr(mlflow.dspy, "autolog", lambda *args, **kwargs: None)  # root spans only: what the pipeline reads
        settings = load_settings()
        seed_ticket_router(settings, load_project(settings.config_path)[1][PROGRAM], END, days=DAYS, per_day=PER_DAY, seed=0)
    world = {"root": root, "home": home, "configs": configs}
    world["before"] = {trust: rewards(world, f"before-{trust}", trust) for trust in (True, False)}
    return world


def rewards(world: dict[str, Any], name: str, trust: bool, attack: Callable[[MlflowClient, str], None] | None = None) -> dict[str, int]:
    """Copy the seeded store, play ``attack`` on it, run the day up to ``contributor_rewards``: ppm by address."""
    from teleprompt_assets.definitions import OPTIMIZE_JOB, build_definitions
    from teleprompt_assets.launch import key_of

    home = world["root"] / name / "tp"
    shutil.copytree(world["home"], home)
    with environment(_env(home, world["configs"][trust])):
        uri = f"sqlite:///{home / 'mlflow.db'}"
        if attack is not None:
            mlflow.set_tracking_uri(uri)
            client = MlflowClient(uri)
            attack(client, client.get_experiment_by_name("teleprompt-production").experiment_id)
        job = build_definitions().resolve_job_def(OPTIMIZE_JOB)
        (home.parent / "dagster").mkdir()
        with dg.instance_for_test(temp_dir=str(home.parent / "dagster")) as instance:
            try:
                result = job.execute_in_process(instance=instance, partition_key=key_of(PROGRAM, END.isoformat()), asset_selection=[dg.AssetKey(s) for s in STEPS])
            finally:
                mlflow.end_run()  # the run's MLflow run lives in this store copy: the next copy's run must not find it active
            assert result.success
            table = single(result.output_for_node("contributor_rewards"))
    assert table["weight_ppm"].sum() == 1_000_000
    world.setdefault("tables", {})[name] = table
    return dict(table.select("contributor", "weight_ppm").iter_rows())


def moved(before: dict[str, int], after: dict[str, int]) -> int:
    """ppm that changed hands: half the total absolute change over every address."""
    return sum(abs(after.get(a, 0) - before.get(a, 0)) for a in set(before) | set(after)) // 2


def victim_traces(client: MlflowClient, experiment: str):
    found = client.search_traces(locations=[experiment], filter_string=f"tags.`{CONTRIBUTOR_TAG}` = '{VICTIM}'", max_results=500)
    assert len(found) >= 10, len(found)
    return found


def _root(trace) -> tuple[Any, Any]:
    root = next(s for s in trace.data.spans if s.parent_id is None)
    return root.inputs, root.outputs


# --- the attacks (a store writer without the app key) ------------------------------------------------

def retag(client: MlflowClient, experiment: str) -> None:
    for trace in victim_traces(client, experiment):
        client.set_trace_tag(trace.info.trace_id, CONTRIBUTOR_TAG, ACCOMPLICE)


def backdate_copies(client: MlflowClient, experiment: str) -> None:
    """Each victim trace re-logged under MALLORY, 1 ms earlier, with the same labels; every other copy
    also carries the victim's signature tag, copied."""
    for n, trace in enumerate(victim_traces(client, experiment)):
        inputs, outputs = _root(trace)
        tags = {PROGRAM_TAG: PROGRAM, CONTRIBUTOR_TAG: MALLORY}
        if n % 2:
            tags[SIGNATURE_TAG] = trace.info.tags[SIGNATURE_TAG]
        span = mlflow.start_span_no_context(PROGRAM, span_type="CHAIN", inputs=inputs, tags=tags, experiment_id=experiment,
                                            start_time_ns=(trace.info.request_time - 1) * 1_000_000)
        span.end(outputs=outputs, end_time_ns=trace.info.request_time * 1_000_000)
        for a in trace.info.assessments:
            metadata = dict(a.metadata or {})  # the victim's label signatures, copied too
            if a.feedback is not None:
                mlflow.log_feedback(trace_id=span.trace_id, name=a.name, value=a.feedback.value, metadata=metadata)
            elif a.expectation is not None:
                mlflow.log_expectation(trace_id=span.trace_id, name=a.name, value=a.expectation.value, metadata=metadata)


def relabel(client: MlflowClient, experiment: str) -> None:
    """Wrong ground truth (another queue) and bad outcomes on the victim's traces: unsigned on one
    third, signed with MALLORY's own key on another, the signed labels overridden on the last."""
    mallory = identity.Signer(Account.from_key(MALLORY_KEY).address, "test", bytes.fromhex(MALLORY_KEY[2:]))
    for n, trace in enumerate(victim_traces(client, experiment)):
        trace_id = trace.info.trace_id
        truth = next((a.expectation.value for a in trace.info.assessments if a.name == "queue" and a.expectation is not None), None)
        wrong = "sales" if truth != "sales" else "billing"
        if n % 3 == 0:
            mlflow.log_expectation(trace_id=trace_id, name="queue", value=wrong)
            mlflow.log_feedback(trace_id=trace_id, name="csat", value=0.0)
        elif n % 3 == 1:
            later = trace.info.request_time + 86_400_000
            for kind, name, value in (("expectation", "queue", wrong), ("feedback", "csat", 0.0)):
                metadata = identity.sign_label(identity.LabelClaim(trace_id, kind, name, identity.label_value(value), later), mallory)
                log = mlflow.log_expectation if kind == "expectation" else mlflow.log_feedback
                log(trace_id=trace_id, name=name, value=value, metadata=metadata)
        else:
            for a in trace.info.assessments:
                if a.feedback is not None and a.name == "csat":
                    mlflow.override_feedback(trace_id=trace_id, assessment_id=a.assessment_id, value=0.0)
            if truth is not None:
                mlflow.log_expectation(trace_id=trace_id, name="queue", value=wrong)


# --- one test per attack -----------------------------------------------------------------------------

def _played(world: dict[str, Any], name: str, attack: Callable[[MlflowClient, str], None]) -> tuple[int, int]:
    """ppm moved by ``attack`` with the trust section and without it; printed for the record."""
    with_trust = moved(world["before"][True], rewards(world, f"{name}-trust", True, attack))
    assert world["tables"][f"{name}-trust"].equals(world["tables"]["before-True"])  # every component, not only the weights
    without = moved(world["before"][False], rewards(world, f"{name}-no-trust", False, attack))
    print(f"{name}: victim had {world['before'][True].get(VICTIM, 0)} ppm; moved with trust {with_trust} ppm, without {without} ppm")
    return with_trust, without


def test_the_seeded_traffic_is_signed_and_rewards_agree_with_and_without_trust(world):
    """Every seeded trace and label is signed by the registered demo key: checking signatures drops nothing."""
    assert world["tables"]["before-True"].equals(world["tables"]["before-False"])
    assert world["before"][True].get(VICTIM, 0) > 0 and world["tables"]["before-True"]["demos"].sum() > 0


def test_retagging_a_contributors_traces_moves_no_reward(world):
    with_trust, without = _played(world, "retag", retag)
    assert with_trust == 0
    assert without > 0  # the pipeline before signatures paid the accomplice


def test_a_backdated_copy_under_another_address_moves_no_reward(world):
    with_trust, without = _played(world, "backdate", backdate_copies)
    assert with_trust == 0
    assert without > 0  # the copies were the "first submitters"; the victim's originals were duplicates


def test_relabelling_by_an_unauthorised_writer_moves_no_reward(world):
    with_trust, without = _played(world, "relabel", relabel)
    assert with_trust == 0
    assert without > 0  # the latest label won: the label check discounted the victim


def test_the_attacks_are_visible_in_the_days_identity_counts(world, tmp_path):
    """What curation believed and ignored, per day, on the store all three attacks were played on."""
    from teleprompt_assets.core.settings import load_settings
    from teleprompt_assets.core.spec import load_project
    from teleprompt_assets.curate.quality import curate_day
    from teleprompt_assets.ingest import traces

    home = tmp_path / "tp"
    shutil.copytree(world["home"], home)
    counts: dict[str, int] = {}
    reasons: dict[str, int] = {}
    with environment(_env(home, world["configs"][True])):
        settings = load_settings()
        project, specs = load_project(settings.config_path)
        mlflow.set_tracking_uri(settings.tracking_uri)
        client = MlflowClient(settings.tracking_uri)
        experiment = client.get_experiment_by_name("teleprompt-production").experiment_id
        for attack in (relabel, backdate_copies, retag):
            attack(client, experiment)
        for offset in range(DAYS):
            day = date.fromordinal(END.toordinal() - offset).isoformat()
            curated = curate_day(traces.read_day(client, experiment, day, processes=1), specs[PROGRAM], project.quality, now_ms=2**62,
                                 trust=project.trust.policy(PROGRAM))
            assert curated.reconciles and curated.trust.startswith("verified") and "DEMO" in curated.trust
            for key, value in curated.identity.items():
                counts[key] = counts.get(key, 0) + value
            for key, value in curated.reasons.items():
                reasons[key] = reasons.get(key, 0) + value
    assert counts["retagged"] >= 10 and counts["labels_unsigned"] > 0 and counts["labels_unauthorised"] > 0
    assert reasons.get("unsigned", 0) > 0 and reasons.get("bad_signature", 0) > 0, reasons
    print(json.dumps({"identity": counts, "reasons": reasons}, sort_keys=True))
