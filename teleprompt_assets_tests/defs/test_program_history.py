"""What a person sees on a program's evaluation after two days (issue 18): one verdict with its
DeltaOne badge, the days as a table, one metadata series per program, links into MLflow, and the
same history as an HTML page among the MLflow run's artifacts."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import mlflow

from teleprompt_assets_tests.reliability import END, PROGRAM, environment, fast_tmp, fresh_store, pipeline_env  # noqa: F401 - fixtures


def test_two_days_of_one_program_read_as_its_history(fast_tmp):
    from teleprompt_assets.core.settings import load_settings
    from teleprompt_assets.definitions import OPTIMIZE_JOB, build_definitions
    from teleprompt_assets.defs.partitions import key_of

    home = fresh_store(fast_tmp)
    with environment(pipeline_env(home) | {"TELEPROMPT_MLFLOW_UI_URL": "http://mlflow.example:5000"}), dg.instance_for_test(temp_dir=str(fast_tmp / "dagster")) as instance:
        job = build_definitions().resolve_job_def(OPTIMIZE_JOB)
        for day in (END - timedelta(days=1), END):
            job.execute_in_process(instance=instance, partition_key=key_of(PROGRAM, day.isoformat()), raise_on_error=False)
        [latest] = instance.fetch_materializations(dg.AssetKey("evaluation_report"), limit=1).records
        meta = latest.asset_materialization.metadata
        assert str(latest.asset_materialization.partition) == key_of(PROGRAM, END.isoformat())
        summary = meta["summary"].value
        assert summary.startswith(f"**{PROGRAM}** {END}: ") and ("✅ DeltaOne" in summary or "❌ no DeltaOne" in summary)
        assert [line.split(" | ")[0] for line in summary.splitlines() if line.startswith("| 20")] == [f"| {END}", f"| {END - timedelta(days=1)}"]
        yesterday = next(line for line in summary.splitlines() if line.startswith(f"| {END - timedelta(days=1)}")).split(" | ")
        assert yesterday[6].endswith("%") and yesterday[9].startswith("$") and yesterday[10].rstrip(" |").endswith("%"), yesterday  # quarantined, cost, top share
        assert meta[f"{PROGRAM}.candidate_score"].value == meta["candidate_score"].value  # a series of its own per program
        assert isinstance(meta["mlflow_run"], dg.UrlMetadataValue) and meta["mlflow_run"].value.startswith("http://mlflow.example:5000/#/experiments/")
        assert meta["production_traces"].value.endswith("/traces")
        [attested] = instance.fetch_materializations(dg.AssetKey("deltaone_attestation"), limit=1).records
        badge = attested.asset_materialization.metadata["summary"].value
        assert badge.startswith(f"**{PROGRAM}** {END}: ") and ("✅ DeltaOne attested, uid `0x" in badge or "❌ not attested: " in badge), badge
        run_id = meta["mlflow_run"].value.rsplit("/", 1)[-1]
        mlflow.set_tracking_uri(load_settings().tracking_uri)
        page = mlflow.artifacts.load_text(f"runs:/{run_id}/{PROGRAM}/history.html")
        assert f"<td>{END}</td>" in page and f"<td>{END - timedelta(days=1)}</td>" in page and "<svg" in page
