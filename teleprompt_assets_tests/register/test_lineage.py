import json

from teleprompt_assets.core.config import ProgramConfig
from teleprompt_assets.core.spec import ProgramSpec
from teleprompt_assets.register.lineage import regression, version_artifacts, version_tags
from teleprompt_assets.register.registry import SAMPLE_ARTIFACT

SPEC = ProgramSpec("ticket_router", ProgramConfig(module="teleprompt_assets.samples.ticket_router:TicketRouter", optimizer={"params": {"max_labeled_demos": 4}}))
EVALUATION = {"baseline_version": 2, "evaluation_method": {"kind": "exact_match"}, "ab_report": "# A/B", "scores": [],
              "comparison": {"baseline_sum": 10, "candidate_sum": 12, "n": 20, "delta_ppm": 200_000, "deltaone": True}}
COMPILED = {"data_traces": [{"contributor": "a"}, {"contributor": "b"}, {"contributor": "a"}], "demos": []}


def test_tags_name_the_lineage_of_one_version():
    tags = version_tags(SPEC, "2026-11-20|ticket_router", "0xdead", "run-1", COMPILED, EVALUATION)
    assert tags["base_version"] == 2 and tags["dagster_run_id"] == "run-1" and tags["contributor_count"] == 2
    assert (tags["baseline_score"], tags["candidate_score"], tags["eval_count"]) == (10, 12, 20)
    assert json.loads(tags["optimizer_config"]) == {"max_labeled_demos": 4}


def test_artifacts_travel_with_the_version():
    files = version_artifacts(EVALUATION, {"message": "hi"}, [{"contributor": "a"}])
    assert set(files) == {"ab_report.md", "evaluation.json", SAMPLE_ARTIFACT, "contributors.json"}
    assert json.loads(files[SAMPLE_ARTIFACT]) == {"message": "hi"}


def test_regression_is_c_below_b_only():
    assert regression({"baseline_sum": 10, "candidate_sum": 10}, 3) is None
    assert regression({"baseline_sum": 10, "candidate_sum": 9}, 3) == "C=9 < B=10: v3 is registered but kept out of serving"
