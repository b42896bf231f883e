import json

from teleprompt_assets.core.config import ProgramConfig
from teleprompt_assets.core.spec import ProgramSpec
from teleprompt_assets.register.lineage import regression, version_artifacts, version_description, version_metrics, version_params, version_tags
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


def _settings():
    from pathlib import Path

    from teleprompt_assets.core.settings import Settings

    return Settings(home=Path("/h"), tracking_uri="sqlite:///x", registry_uri="sqlite:///x", artifact_root="file:///a", config_path=Path("/c"),
                    pipeline_experiment="teleprompt-pipeline", dagster_ui_url="https://dagster.example/")


def test_tags_link_back_to_the_dagster_run_and_asset():
    tags = version_tags(SPEC, "2026-11-20|ticket_router", "0xdead", "run-1", COMPILED, EVALUATION, settings=_settings())
    assert tags["dagster_run_id"] == "run-1"
    assert tags["dagster_run_url"] == "https://dagster.example/runs/run-1"
    assert tags["dagster_asset_url"] == "https://dagster.example/assets/registered_version"
    assert "dagster_run_url" not in version_tags(SPEC, "p", "0xdead", "run-1", COMPILED, EVALUATION)  # no settings, no links


def test_tags_name_the_means_beside_the_sums_they_come_from():
    """``baseline_score`` / ``candidate_score`` stay sums of quantized scores (status, rollback and the
    attestation read them); the means in [0, 1] get names of their own."""
    tags = version_tags(SPEC, "p", "0xdead", "run-1", COMPILED, EVALUATION)
    assert (tags["baseline_score"], tags["candidate_score"]) == (10, 12)
    assert (tags["baseline_mean"], tags["candidate_mean"], tags["delta"]) == ("5e-07", "6e-07", "0.2")
    assert "sum" in tags["score_units"] and "10^6" in tags["score_units"]


def test_params_are_the_optimizer_settings_and_the_data_it_learned_from():
    compiled = COMPILED | {"optimizer": {"name": "BootstrapFewShot", "params": {"max_labeled_demos": 4, "teacher_settings": {"x": 1}},
                                         "warm_start": True, "time_limit_s": 60}, "warm_start_from": "champion"}
    params = version_params(SPEC, "2026-11-20|ticket_router", "0xdead", compiled, EVALUATION)
    assert params["optimizer"] == "BootstrapFewShot" and params["optimizer.max_labeled_demos"] == "4"
    assert json.loads(params["optimizer.teacher_settings"]) == {"x": 1}
    assert params["warm_start"] == "True" and params["warm_start_from"] == "champion" and params["optimizer.time_limit_s"] == "60"
    assert params["dataset_hash"] == "0xdead" and params["partition"] == "2026-11-20|ticket_router"
    assert params["base_version"] == "2" and params["evaluation_method"] == "exact_match"
    assert all(isinstance(v, str) for v in params.values())
    # a compile output without its optimizer record falls back to the program's configuration
    assert version_params(SPEC, "p", "0xdead", COMPILED, EVALUATION)["optimizer.max_labeled_demos"] == "4"


def test_metrics_are_means_in_0_1_and_the_relative_delta():
    comparison = EVALUATION["comparison"] | {"baseline_sum": 10_000_000, "candidate_sum": 12_000_000, "n": 20, "delta_ppm": 200_000,
                                             "ci_low_ppm": -50_000, "ci_high_ppm": 400_000}
    metrics = version_metrics(comparison)
    assert metrics == {"baseline_mean": 0.5, "candidate_mean": 0.6, "delta": 0.2, "delta_ci_low": -0.05, "delta_ci_high": 0.4, "eval_count": 20.0,
                       "deltaone": 1.0}
    assert version_metrics(comparison | {"n": 0}) == {}


def test_description_says_what_the_version_scored_and_where_it_was_made():
    text = version_description(SPEC, "2026-11-14..2026-11-20", EVALUATION | {"comparison": EVALUATION["comparison"] | {"baseline_sum": 10_000_000,
                                                                                                                          "candidate_sum": 12_000_000}},
                               "run-1", _settings())
    assert "ticket_router" in text and "2026-11-14..2026-11-20" in text and "0.5000" in text and "0.6000" in text and "+20.00%" in text
    assert "https://dagster.example/runs/run-1" in text


def test_auto_records_its_choice_and_every_candidates_dev_score():
    candidates = [{"optimizer": "KNNFewShot", "dev_score": 0.9, "dev_count": 20, "lm_calls": 20, "estimate": 20, "note": "chosen, refit on train + dev"},
                  {"optimizer": "BootstrapFewShot", "dev_score": 0.8, "dev_count": 20, "lm_calls": 25, "estimate": 30, "note": ""},
                  {"optimizer": "MIPROv2", "dev_score": None, "dev_count": 0, "lm_calls": 0, "estimate": 400, "note": "skipped: ..."}]
    compiled = COMPILED | {"optimizer": {"name": "auto", "params": {"max_labeled_demos": 24}}, "optimizer_chosen": {"name": "KNNFewShot", "params": {"k": 3}},
                           "learned_from": ["train", "dev"], "candidates": candidates}
    params = version_params(SPEC, "p", "0xdead", compiled, EVALUATION)
    assert (params["optimizer"], params["optimizer.chosen"], params["optimizer.chosen.k"], params["learned_from"]) == ("auto", "KNNFewShot", "3", "train+dev")
    metrics = version_metrics(EVALUATION["comparison"], compiled)
    assert (metrics["dev_score.KNNFewShot"], metrics["dev_score.BootstrapFewShot"], metrics["dev_lm_calls.BootstrapFewShot"]) == (0.9, 0.8, 25.0)
    assert "dev_score.MIPROv2" not in metrics and metrics["dev_lm_calls.MIPROv2"] == 0.0
    auto = ProgramSpec("ticket_router", SPEC.config.model_copy(update={"optimizer": SPEC.config.optimizer.model_copy(update={"name": "auto"})}))
    assert "KNNFewShot (chosen by auto on the dev split)" in version_description(auto, "w", EVALUATION, "run-1", _settings(), compiled)
    assert version_tags(auto, "p", "0xdead", "run-1", compiled, EVALUATION)["optimizer_chosen"] == "KNNFewShot"
