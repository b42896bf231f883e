"""Scale-out, end to end: PostgreSQL from the Debian package, `mlflow server` on it, Dagster instance
storage on it (``deploy/dagster.yaml`` unchanged), and the optimize job run through that server.

Everything listens on 127.0.0.1 only and lives in temp dirs that are removed afterwards. Without
PostgreSQL (and no root to install it) the module is skipped locally; with ``CI`` set it fails.
"""

import os
import shutil
import time
from datetime import date
from pathlib import Path

import dagster as dg
import mlflow
import pytest
from mlflow import MlflowClient

from teleprompt_assets.attest.bundles import verify_bundle
from teleprompt_assets.core.settings import load_settings
from teleprompt_assets.core.spec import load_project
from teleprompt_assets.definitions import INGEST_JOB, build_definitions
from teleprompt_assets.launch import run_partition
from teleprompt_assets.register.registry import CHAMPION
from teleprompt_assets.samples.seed import seed_ticket_router
from teleprompt_assets_tests.conftest import REPO, set_env, small_window_config
from teleprompt_assets_tests.servers import mlflow_server, postgres

pytestmark = pytest.mark.e2e  # starts servers or separate processes: `make test-e2e`

ATTESTER_KEY = "0x5d1c0f4a7b8e2c3d9f6a1b4e7c0d3f6a9b2e5c8d1f4a7b0e3c6d9f2a5b8e1c40"
END = date(2026, 9, 12)
DAYS = 3  # 60 traces: enough for a significant DeltaOne on the window's newest inputs, ~0.5 s each through the server
PER_DAY = 20
PROGRAM = "ticket_router"


@pytest.fixture(scope="module")
def scale_out(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("scale-out")
    timings: dict[str, float] = {}
    started = time.perf_counter()
    try:
        yield from _scale_out(work, timings, started)
    finally:
        print(f"\nscale-out timings (s): {', '.join(f'{k} {v:.1f}' for k, v in timings.items())}, total {time.perf_counter() - started:.1f}")


def _scale_out(work: Path, timings: dict[str, float], started: float):
    with postgres() as pg:
        timings["postgres"] = time.perf_counter() - started
        with mlflow_server(pg.url("mlflow"), work) as server:
            timings["mlflow_server"] = time.perf_counter() - started - timings["postgres"]
            saved = set_env(work / "tp")
            try:
                os.environ["MLFLOW_TRACKING_URI"] = server.url
                os.environ["TELEPROMPT_CONFIG"] = str(small_window_config(work))  # ~10 held-out examples
                os.environ["TELEPROMPT_ATTESTER_KEY"] = ATTESTER_KEY
                dagster_home = work / "dagster"
                dagster_home.mkdir()
                shutil.copy(REPO / "deploy" / "dagster.yaml", dagster_home / "dagster.yaml")
                os.environ["DAGSTER_HOME"] = str(dagster_home)
                os.environ.update({"DAGSTER_PG_HOST": pg.host, "DAGSTER_PG_PORT": str(pg.port), "DAGSTER_PG_DB": "dagster",
                                   "DAGSTER_PG_USERNAME": "dagster", "DAGSTER_PG_PASSWORD": pg.passwords["dagster"]})
                settings = load_settings()
                spec = load_project(settings.config_path)[1][PROGRAM]
                mark = time.perf_counter()
                seeded = seed_ticket_router(settings, spec, END, days=DAYS, per_day=PER_DAY, seed=0)
                timings["seed"] = time.perf_counter() - mark
                mark = time.perf_counter()
                defs = build_definitions()
                with dg.DagsterInstance.get() as instance:
                    for day in seeded.days[:-1]:
                        run_partition(defs, PROGRAM, day, instance, INGEST_JOB)
                    out = run_partition(defs, PROGRAM, END.isoformat(), instance)
                    timings["pipeline"] = time.perf_counter() - mark
                    yield {"pg": pg, "server": server, "settings": settings, "out": out, "instance": instance,
                           "client": MlflowClient(tracking_uri=server.url, registry_uri=server.url), "seeded": seeded, "timings": timings}
            finally:
                mlflow.set_tracking_uri(None)  # the server is about to go: leave no global pointing at it
                mlflow.set_registry_uri(None)
                os.environ.clear()
                os.environ.update(saved)


def test_instance_is_the_shipped_postgres_config(scale_out):
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    instance = scale_out["instance"]
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
    limits = instance.get_concurrency_config().run_queue_config
    assert limits.max_concurrent_runs == 4
    assert {"key": "dagster/partition/program", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits.tag_concurrency_limits


def test_dagster_runs_and_events_are_in_postgres(scale_out):
    out, pg = scale_out["out"], scale_out["pg"]
    with pg.connect("dagster") as conn, conn.cursor() as cur:
        cur.execute("SELECT status, pipeline_name FROM runs WHERE run_id = %s", (out["run_id"],))
        assert cur.fetchall() == [("SUCCESS", "optimize_program")]
        cur.execute("SELECT count(*) FROM runs WHERE status = 'SUCCESS'")
        assert cur.fetchone()[0] == DAYS  # DAYS - 1 ingest runs and one optimize run
        cur.execute("SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'", (out["run_id"],))
        assert cur.fetchone()[0] >= 8
    conn.close()
    assert not (scale_out["settings"].dagster_home / "history").exists()  # no sqlite run storage beside it


def test_traces_runs_and_versions_are_in_the_servers_postgres(scale_out):
    out, pg, settings = scale_out["out"], scale_out["pg"], scale_out["settings"]
    with pg.connect("mlflow") as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM trace_info")
        assert cur.fetchone()[0] == DAYS * PER_DAY
        cur.execute("SELECT count(DISTINCT trace_id) FROM spans")  # payloads live in the database, not in artifacts
        assert cur.fetchone()[0] == DAYS * PER_DAY
        cur.execute("SELECT count(DISTINCT trace_id) FROM assessments WHERE assessment_type = 'feedback'")
        assert cur.fetchone()[0] == DAYS * PER_DAY
        cur.execute("SELECT version FROM model_versions WHERE name = %s", (out["registered_version"]["name"],))
        assert cur.fetchall() == [(out["registered_version"]["version"],)]
        cur.execute("SELECT alias, version FROM registered_model_aliases WHERE name = %s", (out["registered_version"]["name"],))
        assert cur.fetchall() == [(CHAMPION, out["registered_version"]["version"])]
    conn.close()
    assert not (settings.home / "mlflow.db").exists()  # nothing fell back to the local sqlite store


def test_registered_version_is_champion_and_loads_through_the_server(scale_out):
    import dspy

    from teleprompt_assets.core.lm import offline_lm

    out, client, server = scale_out["out"], scale_out["client"], scale_out["server"]
    reg = out["registered_version"]
    assert reg["name"] == f"teleprompt-{PROGRAM}" and reg["created"]
    version = client.get_model_version(reg["name"], str(reg["version"]))
    assert version.tags["dagster_run_id"] == out["run_id"]
    assert int(client.get_model_version_by_alias(reg["name"], CHAMPION).version) == reg["version"]
    mlflow.set_tracking_uri(server.url)
    mlflow.set_registry_uri(server.url)
    model = mlflow.dspy.load_model(f"models:/{reg['name']}@{CHAMPION}")
    with dspy.context(lm=offline_lm()):
        prediction = model(message="My package for order #10482 has not arrived yet.")
    assert prediction.queue == "shipping"


def test_attestation_verifies_from_the_outbox_and_from_the_server(scale_out, tmp_path, capsys):
    from teleprompt_assets.cli import main

    out, client, server = scale_out["out"], scale_out["client"], scale_out["server"]
    att = out["deltaone_attestation"]
    assert out["evaluation_report"]["comparison"]["deltaone"], out["evaluation_report"]["comparison"]
    assert att["attested"] and att["verifies"], att
    assert verify_bundle(Path(att["bundle"]), att["attester"]) == []
    run_id = out["registered_version"]["run_id"]
    downloaded = Path(client.download_artifacts(run_id, "attestation", str(tmp_path)))
    assert verify_bundle(downloaded, att["attester"]) == []
    assert os.environ["MLFLOW_TRACKING_URI"] == server.url  # `teleprompt verify` checks programHash against the registered model there
    assert main(["verify", att["bundle"], "--signer", att["attester"]]) == 0
    assert "and registered model" in capsys.readouterr().out


def test_backups_restore_into_empty_databases(scale_out, tmp_path):
    """docs/deployment.md's backup and restore: pg_dump by each owning role, pg_restore into a fresh
    database; MLflow opens the restored copy and finds the champion, Dagster's run is there."""
    pg, out = scale_out["pg"], scale_out["out"]
    reg = out["registered_version"]
    for role in ("mlflow", "dagster"):
        dump = tmp_path / f"{role}.dump"
        pg.tool("pg_dump", "--format=custom", f"--file={dump}", role, role=role)
        pg.tool("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", f"CREATE DATABASE {role}_restored OWNER {role}")
        pg.tool("pg_restore", "--no-owner", "--exit-on-error", "--single-transaction", f"--dbname={role}_restored", str(dump), role=role)
    restored = MlflowClient(tracking_uri=pg.url("mlflow", "mlflow_restored"))
    assert int(restored.get_model_version_by_alias(reg["name"], CHAMPION).version) == reg["version"]
    with pg.connect("dagster", "dagster_restored") as conn, conn.cursor() as cur:
        cur.execute("SELECT status FROM runs WHERE run_id = %s", (out["run_id"],))
        assert cur.fetchall() == [("SUCCESS",)]
    conn.close()
