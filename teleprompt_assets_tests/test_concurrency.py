"""Concurrency (issue 8): two runs of the same program and window at once.

- Two full runs of the job, released together from a barrier, sharing one Dagster instance whose
  ``teleprompt_registry`` pool has a limit of 1: both finish, the pooled steps (registration,
  promotion, attestation) never execute at the same time, and the store ends with one version,
  one attestation and no half state.
- Without any pool: two processes registering the same program and window at the same instant;
  the registry lock lets one write while the other waits, re-checks and reuses its version (only
  one model is ever logged). With no shared lock folder (two machines), the lowest version wins
  and the loser deletes its own. A lock held past the timeout stops the waiter cleanly.
- Two processes generating the development attester key at once end up with the same key.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path

import dagster as dg
import pytest

from teleprompt_assets.attest.keys import load_attester
from teleprompt_assets.core.settings import load_settings
from teleprompt_assets.core.tracking import connect, experiment_id
from teleprompt_assets.definitions import build_definitions
from teleprompt_assets.defs.register import REGISTRY_POOL
from teleprompt_assets.register import registry
from teleprompt_assets_tests.reliability import (  # noqa: F401 - fixtures
    MODEL,
    children,
    environment,
    fast_tmp,
    fresh_store,
    inspect_store,
    pipeline_env,
    register_sample,
    scratch_root,
    start_register,
    start_run,
    wait_child,
    warm_home,
)

POOLED = ("registered_version", "champion_alias", "deltaone_attestation")


def test_the_registry_steps_share_one_pool():
    ops = [op for a in build_definitions().assets for op in ([a.op] if isinstance(a.node_def, dg.OpDefinition) else a.node_def.iterate_op_defs())]
    pools = {op.name: op.pool for op in ops}
    assert {name for name, pool in pools.items() if pool == REGISTRY_POOL} == set(POOLED)


@pytest.fixture(scope="module")
def race():
    dest = Path(tempfile.mkdtemp(prefix="tp-race-", dir=scratch_root()))
    home = fresh_store(dest)
    env = pipeline_env(home)
    instance_dir = dest / "dagster"
    try:
        with environment(env):
            with dg.instance_for_test(temp_dir=str(instance_dir)) as instance:
                instance.event_log_storage.set_concurrency_slots(REGISTRY_POOL, 1)
            barrier = children().Barrier(2)
            first, second = (start_run(env, instance_dir, barrier=barrier) for _ in range(2))
            codes = [wait_child(first), wait_child(second)]
            with dg.instance_for_test(temp_dir=str(instance_dir)) as instance:
                runs = [r.dagster_run.run_id for r in instance.get_run_records()]
                intervals = []
                for run_id in runs:
                    starts = {e.step_key: e.timestamp for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)}
                    ends = {e.step_key: e.timestamp for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)}
                    intervals += [(starts[s], ends[s], run_id, s) for s in POOLED if s in starts and s in ends]
                store = inspect_store()
            yield {"codes": codes, "runs": runs, "intervals": sorted(intervals), "store": store}
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def test_two_runs_at_once_both_finish_and_register_once(race):
    assert race["codes"] == [0, 0]
    assert len(race["runs"]) == 2
    store = race["store"]
    assert list(store.versions) == [1] and store.champion == 1 and len(store.bundles) == 1
    assert store.versions[1]["attestation_uid"] == store.bundles[0].name
    assert store.problems == []


def test_the_pool_lets_one_registry_step_run_at_a_time(race):
    intervals = race["intervals"]
    assert len(intervals) == 2 * len(POOLED), intervals  # every pooled step ran, in both runs
    for (_, end, run, step), (start, _, other_run, other_step) in zip(intervals, intervals[1:]):
        assert end <= start, f"{step} of {run} overlapped {other_step} of {other_run}"


def _register_at_once(lock_dirs: list[str | None]) -> list[tuple[int, bool]]:
    env = {k: os.environ[k] for k in ("TELEPROMPT_HOME", "TELEPROMPT_CONFIG", "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING")}
    settings = load_settings()
    experiment_id(connect(settings), settings, "teleprompt-pipeline")
    ctx = children()
    barrier, results = ctx.Barrier(len(lock_dirs)), ctx.SimpleQueue()
    procs = [start_register(env, lock_dir, barrier, results) for lock_dir in lock_dirs]
    assert [wait_child(p) for p in procs] == [0] * len(lock_dirs)
    return sorted(results.get() for _ in lock_dirs)


def test_the_registry_lock_lets_one_writer_register(warm_home):
    outcomes = _register_at_once([None, None])  # both use TELEPROMPT_HOME/locks
    assert outcomes == [(1, False), (1, True)]
    client = connect(load_settings())
    assert [int(v.version) for v in client.search_model_versions(f"name = '{MODEL}'")] == [1]
    experiment = client.get_experiment_by_name("teleprompt-pipeline").experiment_id
    assert len(client.search_logged_models(experiment_ids=[experiment])) == 1  # the waiter logged nothing


def test_without_a_shared_lock_the_lowest_version_wins(warm_home, tmp_path):
    outcomes = _register_at_once([str(tmp_path / "machine-a"), str(tmp_path / "machine-b")])
    client = connect(load_settings())
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert [int(v.version) for v in versions] == [1]
    assert {v for v, _ in outcomes} == {1} and sum(created for _, created in outcomes) <= 1


def test_a_lock_held_too_long_stops_the_waiter_cleanly(warm_home, monkeypatch):
    monkeypatch.setenv(registry.LOCK_TIMEOUT_ENV, "0.3")
    with registry.registration_lock(warm_home / "locks", MODEL, "2026-01-01..2026-01-07"):
        with pytest.raises(registry.RegistryBusy, match="another run is registering it"):
            register_sample("shipping")
    client = connect(load_settings())
    assert client.search_model_versions(f"name = '{MODEL}'") == []
    assert register_sample("shipping").created  # once released, registration proceeds


def test_two_first_uses_of_the_dev_key_agree(tp_home):
    tp_home.mkdir(parents=True, exist_ok=True)
    barrier, found, errors = threading.Barrier(2), [], []

    def first_use() -> None:
        barrier.wait()
        try:
            found.append(load_attester(tp_home).address)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=first_use) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(found)) == 1
    assert [p.name for p in (tp_home / "keys").iterdir()] == ["dev-attester.json"]
