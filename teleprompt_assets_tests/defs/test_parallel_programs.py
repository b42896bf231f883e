"""Both sample programs optimize in one run of ``optimize_program``, side by side under the
multiprocess executor, launched the way an operator does (``teleprompt run``, its own process).
Up to 4 parallel steps here: evaluation and rewards (two programs each) become ready together."""

import os
import subprocess
import sys
from datetime import date

import dagster as dg
import pytest
from mlflow import MlflowClient

from teleprompt_assets.core.settings import load_settings
from teleprompt_assets.core.spec import load_project
from teleprompt_assets.samples.seed import seed_program
from teleprompt_assets_tests.conftest import REPO, project_config, set_env, small_window_config

pytestmark = pytest.mark.e2e  # starts servers or separate processes: `make test-e2e`

END = date(2026, 9, 14)
PROGRAMS = ["outreach_reply", "ticket_router"]
ASSETS = ["raw_traces", "curated_traces", "quarantined_traces", "training_set", "compiled_program", "evaluation_report",
          "registered_version", "champion_alias", "contributor_rewards", "deltaone_attestation"]


@pytest.fixture(scope="module")
def parallel_run(tmp_path_factory):
    home = tmp_path_factory.mktemp("parallel") / "tp"
    saved = set_env(home)
    os.environ["TELEPROMPT_CONFIG"] = str(small_window_config(home.parent))  # one day of 30 traces: ~10 held-out examples
    try:
        settings = load_settings()
        specs = load_project(settings.config_path)[1]
        for program in PROGRAMS:
            seed_program(settings, specs[program], END, days=1, per_day=30, seed=1)
        # offline LM calls wait as a hosted LM's do, so each compile takes seconds and the overlap shows
        env = dict(os.environ) | {"DAGSTER_HOME": str(home / "dagster"), "TELEPROMPT_MAX_PARALLEL_STEPS": "4", "TELEPROMPT_OFFLINE_LATENCY_MS": "100"}
        done = subprocess.run([sys.executable, "-m", "teleprompt_assets.cli", "run", "--date", END.isoformat()],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-4000:]
        with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
            [run] = instance.get_runs()
            events = list(instance.all_logs(run.run_id))
            yield settings, done.stdout, run, events
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _steps(events, event_type: str) -> dict[str, dg.EventLogEntry]:
    return {e.step_key: e for e in events if e.dagster_event and e.dagster_event.event_type_value == event_type}


def test_one_run_holds_both_programs(parallel_run):
    _, stdout, run, events = parallel_run
    assert run.job_name == "optimize_program" and run.status == dg.DagsterRunStatus.SUCCESS
    for program in PROGRAMS:
        assert f"{program} {END.isoformat()}: run {run.run_id}" in stdout
    done = {(e.dagster_event.asset_key.path[-1], e.dagster_event.partition) for e in events
            if e.dagster_event and e.dagster_event.event_type_value == "ASSET_MATERIALIZATION"}
    assert {(asset, f"{END.isoformat()}|{program}") for asset in ASSETS for program in PROGRAMS} <= done
    # and the window's earlier days, which no run had curated, were ingested by this one (issue 14)
    earlier = {(a, p) for a, p in done if not p.startswith(END.isoformat())}
    assert {a for a, _ in earlier} == {"raw_traces", "curated_traces", "quarantined_traces"} and len(earlier) == 3 * 6 * len(PROGRAMS)


@pytest.mark.parametrize("stage", ["compiled_program.compile_program", "evaluation_report.evaluate_program", "contributor_rewards.reward_program"])
def test_the_programs_go_through_the_lm_stages_in_parallel_processes(parallel_run, stage):
    _, _, _, events = parallel_run
    assert any("multiprocess executor" in (e.message or "") for e in events)
    alive, finished = _steps(events, "STEP_WORKER_STARTED"), _steps(events, "STEP_SUCCESS")
    steps = sorted(k for k in alive if k.startswith(stage + "["))
    assert steps == [f"{stage}[{p}__{END.isoformat().replace('-', '_')}]" for p in PROGRAMS]
    a, b = steps
    # both step processes were up before either finished: they ran side by side, not in turn
    assert max(alive[a].timestamp, alive[b].timestamp) < min(finished[a].timestamp, finished[b].timestamp)
    assert alive[a].dagster_event.pid != alive[b].dagster_event.pid


def test_each_program_gets_its_own_version_from_the_same_run(parallel_run):
    settings, _, run, _ = parallel_run
    client = MlflowClient(settings.tracking_uri, settings.registry_uri)
    specs = load_project(settings.config_path)[1]
    for program in PROGRAMS:
        [version] = client.search_model_versions(f"name = '{specs[program].registered_model_name}'")
        assert version.tags["dagster_run_id"] == run.run_id
        assert version.tags["partition"] == f"{END.isoformat()}|{program}"


def test_one_programs_regression_does_not_hold_back_the_others(parallel_run, tmp_path):
    """In a run of both, ticket_router regresses (an optimizer that keeps no demos): its version is
    registered and kept out of serving; the gate warns instead of failing the run, and outreach_reply
    goes on through promotion and attestation."""
    from teleprompt_assets.definitions import OPTIMIZE_JOB, build_definitions
    from teleprompt_assets.defs.partitions import run_tags

    settings, _, _, _ = parallel_run
    with project_config(tmp_path, "ticket_router", optimizer={"name": "LabeledFewShot", "params": {"k": 0}}), dg.instance_for_test() as instance:
        job = build_definitions().resolve_job_def(OPTIMIZE_JOB)
        result = job.execute_in_process(instance=instance, tags=run_tags(job.partitions_def, PROGRAMS, END.isoformat()), raise_on_error=False)
    assert result.success
    [gate] = [e.event_specific_data for e in result.all_events
              if e.event_type_value == "ASSET_CHECK_EVALUATION" and e.event_specific_data.check_name == "no_regression"]
    assert not gate.passed and gate.severity == dg.AssetCheckSeverity.WARN and gate.description.startswith("ticket_router: C=")
    champions = result.output_for_node("champion_alias")
    assert champions[f"{END.isoformat()}|ticket_router"]["champion_version"] == 1
    assert not champions[f"{END.isoformat()}|ticket_router"]["champion"]
    assert champions[f"{END.isoformat()}|outreach_reply"]["champion"]
    attested = result.output_for_node("deltaone_attestation")
    assert attested[f"{END.isoformat()}|ticket_router"] == {"attested": False, "reason": "DeltaOne not reached"}
    client = MlflowClient(settings.tracking_uri, settings.registry_uri)
    assert sorted(int(v.version) for v in client.search_model_versions("name = 'teleprompt-ticket_router'")) == [1, 2]


def test_each_version_run_holds_that_versions_own_files(parallel_run, tmp_path):
    """One Dagster run, two programs: each version's source run is a child of the Dagster run's MLflow
    run and holds only its own files (issue 14: one shared run kept the last program's files only)."""
    import json

    from teleprompt_assets.register.registry import program_hash

    settings, _, run, _ = parallel_run
    client = MlflowClient(settings.tracking_uri, settings.registry_uri)
    experiment = client.get_experiment_by_name(settings.pipeline_experiment)
    [parent] = [r for r in client.search_runs([experiment.experiment_id], f"tags.dagster_run_id = '{run.run_id}'")
                if "mlflow.parentRunId" not in r.data.tags]
    specs = load_project(settings.config_path)[1]
    seen_runs = set()
    for program in PROGRAMS:
        [version] = [v for v in client.search_model_versions(f"name = '{specs[program].registered_model_name}'") if v.tags["dagster_run_id"] == run.run_id]
        source = client.get_run(version.run_id)
        assert source.data.tags.get("mlflow.parentRunId") == parent.info.run_id
        assert source.data.tags["program"] == program and source.info.status == "FINISHED"
        state = json.loads(open(client.download_artifacts(version.run_id, "program_state.json", str(tmp_path / f"{program}-s"))).read())
        assert program_hash(state) == version.tags["program_hash"]
        uid = version.tags.get("attestation_uid")
        if uid:
            bundle = client.download_artifacts(version.run_id, "attestation", str(tmp_path / program))
            assert json.loads(open(f"{bundle}/attestation.json").read())["uid"] == uid
        contributors = json.loads(open(client.download_artifacts(version.run_id, "contributors.json", str(tmp_path / f"{program}-c"))).read())
        assert contributors is not None
        seen_runs.add(version.run_id)
    assert len(seen_runs) == len(PROGRAMS)
