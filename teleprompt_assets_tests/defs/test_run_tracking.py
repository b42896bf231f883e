"""Which MLflow run a step's tracking resource resumes."""

import time

from mlflow import MlflowClient

from teleprompt_assets.defs.resources import _dagster_runs_own


def test_a_step_resumes_the_dagster_runs_own_mlflow_run_not_a_versions_child(tmp_path):
    """Each version's child run carries the ``dagster_run_id`` tag (its lineage); dagster-mlflow took the
    first run with the tag, so a step after registration resumed a version's run and left it RUNNING
    (seen in CI: test_parallel_programs)."""
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.create_experiment("teleprompt-pipeline")
    parent = client.create_run(experiment, tags={"dagster_run_id": "d-1"})
    time.sleep(0.01)
    for program in ("outreach_reply", "ticket_router"):
        client.create_run(experiment, tags={"dagster_run_id": "d-1", "mlflow.parentRunId": parent.info.run_id, "program": program})
    client.create_run(experiment, tags={"dagster_run_id": "d-2"})
    assert _dagster_runs_own(client, experiment, "d-1") == parent.info.run_id
    assert _dagster_runs_own(client, experiment, "d-3") is None  # the run's first step: dagster-mlflow starts one
