"""What MLflow shows of a registered version (issue 18): params, 0-1 metrics, a signature and an
input example, a description, and links back to the Dagster run; against a real sqlite store."""


import dspy
import mlflow
import pytest
from mlflow.types import DataType

from teleprompt_assets.core.lm import offline_lm
from teleprompt_assets.core.settings import load_settings
from teleprompt_assets.core.spec import load_project
from teleprompt_assets.core.tracking import connect, experiment_id
from teleprompt_assets.optimize.teleprompters import load_state, program_state
from teleprompt_assets.register import lineage, registry

SAMPLE = {"message": "my parcel never arrived"}
COMPARISON = {"baseline_sum": 25_000_000, "candidate_sum": 30_000_000, "n": 40, "delta_ppm": 200_000, "deltaone": True,
              "ci_low_ppm": 10_000, "ci_high_ppm": 390_000}
EVALUATION = {"baseline_version": 0, "evaluation_method": {"kind": "exact_match"}, "comparison": COMPARISON, "scores": [], "ab_report": "# A/B"}


@pytest.fixture
def registered(tp_home, monkeypatch):
    monkeypatch.setenv("TELEPROMPT_DAGSTER_UI_URL", "https://dagster.example")
    settings = load_settings()
    client = connect(settings)
    spec = load_project(settings.config_path)[1]["ticket_router"]
    exp = experiment_id(client, settings, settings.pipeline_experiment)
    program = spec.build()
    program.route.demos = [dspy.Example(message="my parcel never arrived", queue="shipping")]
    state = program_state(program)
    window, partition = "2026-01-01..2026-01-07", "2026-01-07|ticket_router"
    compiled = {"data_traces": [{"contributor": "0xa"}], "demos": [], "optimizer": spec.config.optimizer.model_dump(), "warm_start_from": None}
    tags = lineage.version_tags(spec, partition, "0xdata", "dagster-run-1", compiled, EVALUATION, settings=settings)
    version = registry.register(
        client, spec, load_state(spec, state), state, window, exp, tags, lineage.version_artifacts(EVALUATION, SAMPLE, []),
        params=lineage.version_params(spec, partition, "0xdata", compiled, EVALUATION), metrics=lineage.version_metrics(COMPARISON),
        description=lineage.version_description(spec, window, EVALUATION, "dagster-run-1", settings),
    )
    return client, spec, version


def test_the_versions_run_has_the_optimizer_settings_as_params(registered):
    client, spec, version = registered
    params = client.get_run(version.run_id).data.params
    assert params["optimizer"] == "auto" and params["optimizer.max_labeled_demos"] == "24" and params["optimizer.max_bootstrapped_demos"] == "4"
    assert params["warm_start"] == "False" and params["dataset_hash"] == "0xdata" and params["window"] == "2026-01-01..2026-01-07"
    assert params["program"] == "ticket_router" and params["program_hash"] == version.program_hash


def test_the_versions_run_has_its_scores_as_0_1_metrics(registered):
    client, _, version = registered
    metrics = client.get_run(version.run_id).data.metrics
    assert metrics["baseline_mean"] == 0.625 and metrics["candidate_mean"] == 0.75 and metrics["delta"] == 0.2 and metrics["eval_count"] == 40
    assert all(0 <= metrics[k] <= 1 for k in ("baseline_mean", "candidate_mean"))


def test_scores_keep_their_sums_and_gain_named_means_on_run_and_version(registered):
    client, spec, version = registered
    for tags in (client.get_run(version.run_id).data.tags, client.get_model_version(version.name, str(version.version)).tags):
        assert (tags["baseline_score"], tags["candidate_score"], tags["eval_count"]) == ("25000000", "30000000", "40")
        assert (tags["baseline_mean"], tags["candidate_mean"], tags["delta"]) == ("0.625", "0.75", "0.2")
    scores = registry.champion_scores(client.get_model_version(version.name, str(version.version)).tags)
    assert (scores["baseline_mean"], scores["candidate_mean"]) == (0.625, 0.75)


def test_run_and_version_link_back_to_the_dagster_run_and_asset(registered):
    client, _, version = registered
    for tags in (client.get_run(version.run_id).data.tags, client.get_model_version(version.name, str(version.version)).tags):
        assert tags["dagster_run_id"] == "dagster-run-1"
        assert tags["dagster_run_url"] == "https://dagster.example/runs/dagster-run-1"
        assert tags["dagster_asset_url"] == "https://dagster.example/assets/registered_version"


def test_version_and_run_carry_a_description(registered):
    client, _, version = registered
    described = client.get_model_version(version.name, str(version.version)).description
    assert "0.6250" in described and "0.7500" in described and "https://dagster.example/runs/dagster-run-1" in described
    assert client.get_run(version.run_id).data.tags["mlflow.note.content"] == described


def test_the_model_has_a_signature_and_the_held_out_sample_as_input_example_and_still_loads(registered):
    client, spec, version = registered
    info = mlflow.models.get_model_info(version.uri)
    assert info.signature.inputs.input_names() == list(spec.input_fields) == ["message"]
    assert info.signature.outputs.input_names() == list(spec.output_fields) == ["queue"]
    assert {c.type for c in info.signature.inputs.inputs + info.signature.outputs.inputs} == {DataType.string}
    assert info.saved_input_example_info is not None
    example = mlflow.models.Model.load(version.uri).load_input_example(version.uri)
    assert (example if isinstance(example, dict) else example.to_dict(orient="records")[0]) == SAMPLE
    model = mlflow.dspy.load_model(version.uri)
    with dspy.context(lm=offline_lm()):
        assert model(**SAMPLE).queue == "shipping"


def test_a_rerun_finds_the_version_and_logs_nothing_twice(registered, tp_home):
    """Params are write-once in MLflow: registering the same program and window again must not log them again."""
    client, spec, version = registered
    settings = load_settings()
    state = registry.load_program_state(client, client.get_model_version(version.name, str(version.version)))
    again = registry.register(client, spec, load_state(spec, state), state, "2026-01-01..2026-01-07",
                              experiment_id(client, settings, settings.pipeline_experiment), {}, params={"optimizer": "other"}, metrics={"delta": 9.0})
    assert not again.created and again.version == version.version
    assert client.get_run(version.run_id).data.params["optimizer"] == "auto"
