"""The outcome-only sample end to end: no ground truth, an outcome model decides what is better."""

import json
import os
from datetime import date

import dagster as dg
import pytest

from teleprompt_assets.core.settings import load_settings
from teleprompt_assets.core.spec import load_project
from teleprompt_assets.definitions import INGEST_JOB, build_definitions
from teleprompt_assets.launch import run_partition
from teleprompt_assets.samples.seed import seed_program
from teleprompt_assets_tests.conftest import set_env

END = date(2026, 10, 3)


@pytest.fixture(scope="module")
def outreach(tmp_path_factory: pytest.TempPathFactory):
    saved = set_env(tmp_path_factory.mktemp("outreach") / "tp")
    try:
        settings = load_settings()
        spec = load_project(settings.config_path)[1]["outreach_reply"]
        seeded = seed_program(settings, spec, END, days=4, per_day=25, seed=0)
        defs = build_definitions()
        with dg.instance_for_test() as instance:
            for day in seeded.days[:-1]:
                run_partition(defs, "outreach_reply", day, instance, INGEST_JOB)
            yield run_partition(defs, "outreach_reply", END.isoformat(), instance)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_outcome_only_traces_are_accepted_without_ground_truth(outreach):
    assert len(outreach["quarantined_traces"]) + len(outreach["curated_traces"]) == 25
    assert set(outreach["quarantined_traces"]["reason"]) <= {"duplicate_exact", "near_duplicate", "contributor_cap"}
    assert len(outreach["curated_traces"]) >= 20


def test_outcome_model_is_trained_on_train_only_and_calibrated(outreach):
    method = outreach["evaluation_report"]["evaluation_method"]
    assert method["kind"] == "outcome_model" and method["model"]["outcome"] == "reply_rate"
    train_rows = outreach["training_set"].filter(outreach["training_set"]["split"] == "train").height
    assert method["model"]["trained_on"] == train_rows
    assert method["calibration_dev"]["n"] > 0


def test_demos_come_from_good_outcomes_and_the_candidate_wins(outreach):
    report = outreach["evaluation_report"]["comparison"]
    assert report["candidate_sum"] > report["baseline_sum"] and report["deltaone"]
    compiled = outreach["compiled_program"]
    shown = compiled["demos"] + compiled["demo_pool"]  # fixed demos, or a KNNFewShot pool when auto chose it
    assert shown
    outcome = {r["trace_id"]: json.loads(r["feedback"]).get("reply_rate") for r in outreach["training_set"].iter_rows(named=True)}
    labeled = compiled["demo_pool"] + [d for d in compiled["demos"] if not d["augmented"]]
    assert all(outcome[e["trace_id"]] >= 0.5 for e in labeled)  # what a demo shows as the answer is an answer that earned a reply
    assert outreach["champion_alias"]["champion"]
