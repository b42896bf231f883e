"""The MLflow tracking server going away (issue 8): mid-ingest and mid-registration.

A real MLflow tracking server (mlflow's server app under uvicorn, as ``mlflow server --workers 1``
runs it, see ``servers.KillableMlflowServer``) serves a copy of the seeded store (sqlite backend
store). The optimize job runs in this process against it, with the MLflow client's HTTP retries
off so that a dead server fails a request at once. The server is killed with SIGKILL at each of
these moments, then started again on the same port and store, and the next run re-executes what
the previous one left undone, as Dagster's "re-execute from failure" does:

1. mid-ingest (the whole job): ``raw_traces`` has read the first page of the day's traces (5 a page
   here, so the day's 16 take four) and asks for the second;
2. mid-registration (the whole job again): the registry has just created the model version, with
   its lineage tags; the winner check, the alias, the bundle and the attestation tag are to come;
3. mid-attestation (what 2 left undone): the bundle is published and logged, the version not yet
   tagged with it;
4. no fault (what 3 left undone): the re-run must complete normally.

After each fault the run must have failed (not hung, not succeeded) with an error that names the
unreachable server, the failed steps must have materialized nothing, and the store, read through
the restarted server, must hold no half state (``reliability.inspect_store``: every version
complete, none twice, the alias with its promotion record, no partial bundle, no bundle without
its version, no attestation tag without its bundle; here also no half-written asset output).

Then, with the server down for good: registry lookups must raise instead of reporting "no
champion" or "no such version" (a pipeline that took an outage for an empty registry would measure
a candidate against the uncompiled program and could promote and attest it over the serving
champion), and a trace read cut short between listing and span reads must raise too (not
quarantine the day's traces as unreadable).
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import mlflow
import pytest
from mlflow import MlflowClient

from teleprompt_assets.core.settings import load_settings
from teleprompt_assets.core.spec import load_project
from teleprompt_assets.core.tracking import connect, experiment_id
from teleprompt_assets.ingest import traces
from teleprompt_assets.register import registry
from teleprompt_assets_tests.reliability import (
    END,
    FAST_RETRY,
    MODEL,
    PROGRAM,
    Store,
    act_around,
    environment,
    failure_of,
    fresh_store,
    inspect_store,
    node_of,
    pipeline_env,
    run_job,
    scratch_root,
    single,
)
from teleprompt_assets_tests.servers import KillableMlflowServer, killable_mlflow_server, unavailable

pytestmark = pytest.mark.e2e  # starts servers or separate processes: `make test-e2e`

# No HTTP retries: the MLflow client's default (7, exponential backoff) spends minutes on a dead server.
CLIENT_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
PAGE = 5
STEP_ASSETS = {
    "raw_traces": ["raw_traces"], "curate": ["curated_traces", "quarantined_traces"], "training_set": ["training_set"],
    "compiled_program": ["compiled_program"], "evaluation_report": ["evaluation_report"], "registered_version": ["registered_version"],
    "champion_alias": ["champion_alias"], "contributor_rewards": ["contributor_rewards"], "deltaone_attestation": ["deltaone_attestation"],
}
CONNECTION_LOST = ("Connection refused", "Connection reset by peer", "Connection aborted", "Remote end closed connection")
OUTPUTS = ("registered_version", "champion_alias", "deltaone_attestation")
FAIL_FAST_S = 30  # a run that meets a dead server ends well within this; the job takes ~5 s healthy


@dataclass
class Outcome:
    selected: set[str]  # the steps the run was asked to execute
    success: bool
    failures: dict[str, str]  # failed step -> its message
    succeeded: set[str]
    materialized: set[str]  # assets materialized by the run
    outages: int  # times the injected fault killed the server during the run
    seconds: float
    restart_s: float | None
    store: Store  # read through the restarted server
    staging: list[str]  # $TELEPROMPT_HOME/staging (bundles being assembled)
    day_outputs: list[str]  # stored outputs of END's partition, as asset/file
    partial_outputs: list[str]  # output files left half-written
    outputs: dict  # what the succeeded registry steps returned


@pytest.fixture(scope="module")
def story():
    dest = Path(tempfile.mkdtemp(prefix="tp-outages-", dir=scratch_root()))
    home = dest / "tp"
    seen: dict = {"timings": {}}
    started = time.perf_counter()
    try:
        with killable_mlflow_server(f"sqlite:///{home / 'mlflow.db'}", dest / "server") as server:
            mark = time.perf_counter()
            fresh_store(dest)  # the server's zygote imports meanwhile
            seen["timings"]["store"] = time.perf_counter() - mark
            try:
                seen["timings"]["first start"] = server.start()
            except RuntimeError as exc:
                unavailable(f"mlflow server did not start: {exc}")
            env = pipeline_env(home) | FAST_RETRY | CLIENT_ENV | {"MLFLOW_TRACKING_URI": server.url, "TELEPROMPT_INGEST_PROCESSES": "1"}
            with environment(env), pytest.MonkeyPatch.context() as patch, dg.instance_for_test(temp_dir=str(dest / "dagster")) as instance:
                patch.setattr(traces, "REST_PAGE_MAX", PAGE)  # 16 traces in four pages, as a large day would come
                seen["url"] = server.url
                run = _runner(server, instance, home)
                listings = itertools.count(1)
                seen["ingest"] = run(None, MlflowClient, "search_traces", lambda *a, **k: next(listings) == 2, before=True)
                seen["registration"] = run(_undone(seen["ingest"]), MlflowClient, "create_model_version")
                seen["attestation"] = run(_undone(seen["registration"]), MlflowClient, "set_model_version_tag",
                                          lambda *a, **k: "attestation_uid" in a, before=True)
                seen["rerun"] = run(_undone(seen["attestation"]))
                v1 = connect(load_settings()).get_model_version(MODEL, "1")
                seen["span read"] = _span_read_cut_short(server)
                seen["down"] = _lookups_while_down(server, v1)
                for key in ("ingest", "registration", "attestation", "rerun"):
                    seen["timings"][key] = (round(seen[key].seconds, 1), seen[key].restart_s and round(seen[key].restart_s, 2))
        yield seen
    finally:
        mlflow.set_tracking_uri(None)  # the server is gone: leave no global pointing at it
        mlflow.set_registry_uri(None)
        shutil.rmtree(dest, ignore_errors=True)
        seen["timings"]["total"] = time.perf_counter() - started
        print(f"\noutage story timings (s): {seen['timings']}")


def _runner(server: KillableMlflowServer, instance: dg.DagsterInstance, home: Path):
    """``run(assets, owner, attr, when, before)``: run the job (only ``assets``, if given) with the
    server killed around ``owner.attr`` on the calls ``when`` picks; restart it; read the store."""

    def run(assets: list[str] | None, owner=None, attr: str = "", when: Callable[..., bool] = lambda *a, **k: True, before: bool = False) -> Outcome:
        outages = []

        def outage() -> None:
            outages.append(attr)
            server.kill()

        with pytest.MonkeyPatch.context() as fault:
            if owner is not None:
                act_around(owner, attr, outage, when, before, fault.setattr)
            started = time.perf_counter()
            result = run_job(instance, assets=assets)
            seconds = time.perf_counter() - started
        restart_s = server.start() if not server.running else None
        failed = {node_of(e.step_key) for e in result.all_events if e.is_step_failure}
        succeeded = {node_of(e.step_key) for e in result.all_events if e.event_type_value == "STEP_SUCCESS"} - failed
        storage = Path(load_settings().storage)
        staging = home / "staging"
        return Outcome(
            selected={step for step, keys in STEP_ASSETS.items() if assets is None or set(keys) <= set(assets)},
            success=result.success, failures={node: failure_of(result, node) for node in sorted(failed)},
            succeeded=succeeded,
            materialized={e.asset_key.path[-1] for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"},
            outages=len(outages), seconds=seconds, restart_s=restart_s, store=inspect_store(),
            staging=sorted(p.name for p in staging.iterdir()) if staging.exists() else [],
            day_outputs=sorted(str(p.relative_to(storage)) for p in storage.rglob(f"{END.isoformat()}*")),
            partial_outputs=sorted(str(p.relative_to(storage)) for p in storage.rglob("*.partial")),
            outputs={step: single(result.output_for_node(step)) for step in succeeded & set(OUTPUTS)},
        )

    return run


def _undone(outcome: Outcome) -> list[str]:
    """What "re-execute from failure" runs again: the steps of the run that did not succeed."""
    return [asset for step, assets in STEP_ASSETS.items() if step in outcome.selected - outcome.succeeded for asset in assets]


def _answer(probe: Callable[[], object]) -> tuple[str, str]:
    try:
        return "returned", repr(probe())
    except Exception as exc:  # noqa: BLE001 - the answer under test
        return "raised", f"{type(exc).__name__}: {exc}"


def _span_read_cut_short(server: KillableMlflowServer) -> tuple[str, str]:
    """Two traces whose payloads are too long for their previews, so a read must fetch their spans;
    the server dies after the listing, before the spans are read. Leaves the server down."""
    settings = load_settings()
    client = connect(settings)
    experiment = experiment_id(client, settings, "outage-long-payloads")
    stamps = []
    for n in range(2):
        root = client.start_trace("ticket_router", inputs={"message": f"#{n} " + "my parcel never arrived, " * 60}, experiment_id=experiment)
        client.end_trace(root.trace_id, outputs={"queue": "shipping"})
        stamps.append(client.get_trace(root.trace_id).info.request_time)
    day = datetime.fromtimestamp(stamps[0] / 1000, UTC).date().isoformat()
    with pytest.MonkeyPatch.context() as fault:
        act_around(MlflowClient, "search_traces", server.kill, lambda *a, **k: k.get("include_spans"), before=True, setattr_=fault.setattr)
        answer = _answer(lambda: traces.read_day(client, experiment, day, processes=1)["payload_from"].to_list())
    return answer if not server.running else ("not injected", "the spans were never searched")


def _lookups_while_down(server: KillableMlflowServer, v1) -> dict[str, tuple[str, str]]:
    """With the server down, ask the registry what the pipeline asks it before it evaluates,
    registers and promotes: each answer as ("raised", message) or ("returned", value)."""
    client = connect(load_settings())
    spec = load_project(load_settings().config_path)[1][PROGRAM]
    server.kill()
    return {
        "champion": _answer(lambda: registry.champion(client, MODEL)),
        "find_version": _answer(lambda: registry.find_version(client, MODEL, v1.tags["program_hash"], v1.tags["window"])),
        "baseline_for a new candidate": _answer(lambda: registry.baseline_for(client, spec, "0x" + "ab" * 32, "2026-11-15..2026-11-21")),
    }


def _names_the_dead_server(message: str, url: str) -> bool:
    """The message names the server and a lost connection: refused, or (a pooled connection the
    kill cut) reset or aborted."""
    return url in message and any(lost in message for lost in CONNECTION_LOST)


def _failed_cleanly(outcome: Outcome, url: str) -> None:
    """The run failed by itself, fast, naming the server; what failed stored nothing; no half state."""
    assert outcome.outages == 1, "the fault was never injected"
    assert outcome.success is False
    assert outcome.failures, "no step failed"
    for step, message in outcome.failures.items():
        assert _names_the_dead_server(message, url), f"{step}: {message}"
    failed_assets = {a for step in outcome.failures for a in STEP_ASSETS[step]}
    assert not failed_assets & outcome.materialized, f"failed steps materialized {failed_assets & outcome.materialized}"
    assert outcome.seconds < FAIL_FAST_S, outcome.seconds
    assert outcome.partial_outputs == []
    assert outcome.store.problems == [], outcome.store.problems


def test_the_server_going_away_mid_ingest_fails_the_run_and_stores_nothing(story):
    """Killed when ``raw_traces`` asks for its second page: the step fails, nothing of the day is
    stored (not the first page alone), nothing downstream runs."""
    outcome = story["ingest"]
    _failed_cleanly(outcome, story["url"])
    assert list(outcome.failures) == ["raw_traces"]
    assert outcome.day_outputs == [], outcome.day_outputs
    assert outcome.store.versions == {} and outcome.store.champion is None and outcome.store.bundles == []


def test_the_server_going_away_right_after_the_version_is_created_leaves_a_complete_version_and_nothing_else(story):
    """Killed right after ``create_model_version`` returned: registration fails (it cannot check that
    its version is the lowest of its program and window), no alias, no bundle; the re-run reuses v1."""
    outcome = story["registration"]
    _failed_cleanly(outcome, story["url"])
    assert list(outcome.store.versions) == [1]  # with every lineage tag: one registry transaction
    assert "attestation_uid" not in outcome.store.versions[1] and "promoted_at" not in outcome.store.versions[1]
    assert outcome.store.champion is None and outcome.store.bundles == [] and outcome.staging == []
    assert "registered_version" in outcome.failures
    assert {"champion_alias", "deltaone_attestation"}.isdisjoint(outcome.succeeded)


def test_the_server_going_away_before_the_attestation_is_recorded_leaves_a_verifiable_bundle(story):
    """Re-executed from registration, killed before the version is tagged with its attestation: v1
    reused and champion, one complete bundle in the outbox that verifies against v1, no tag."""
    outcome = story["attestation"]
    _failed_cleanly(outcome, story["url"])
    assert list(outcome.failures) == ["deltaone_attestation"]
    assert outcome.outputs["registered_version"]["version"] == 1 and outcome.outputs["registered_version"]["created"] is False
    assert list(outcome.store.versions) == [1] and outcome.store.champion == 1
    assert len(outcome.store.bundles) == 1 and "attestation_uid" not in outcome.store.versions[1]  # it verifies against v1: no problems
    assert outcome.staging == []


def test_a_rerun_after_the_server_is_back_completes_normally(story):
    """Exactly one version, the champion, one attestation (bundle, artifacts and tag), no staging."""
    outcome = story["rerun"]
    assert outcome.success, outcome.failures
    att = outcome.outputs["deltaone_attestation"]
    assert att["attested"] and att["verifies"]
    assert list(outcome.store.versions) == [1] and outcome.store.champion == 1
    assert [b.name for b in outcome.store.bundles] == [att["uid"]] and outcome.store.versions[1]["attestation_uid"] == att["uid"]
    assert outcome.staging == [] and outcome.partial_outputs == []
    assert outcome.store.problems == [], outcome.store.problems


@pytest.mark.parametrize("lookup", ["champion", "find_version", "baseline_for a new candidate"])
def test_registry_lookups_raise_while_the_server_is_down(story, lookup):
    """Not "no champion" (the candidate would be measured against the uncompiled program, then
    promoted and attested over the real champion) and not "not registered yet"."""
    kind, answer = story["down"][lookup]
    assert kind == "raised", f"{lookup} answered {answer} with the server down"
    assert _names_the_dead_server(answer, story["url"]), answer


def test_spans_unread_because_the_server_is_gone_fail_the_read(story):
    """Not rows quarantined as ``unreadable_payload``: if the server is back by the time
    ``raw_traces`` logs its figures, the step succeeds and the day trains on part of its data."""
    kind, answer = story["span read"]
    assert kind == "raised", f"read_day returned payload sources {answer} with the server gone"
    assert _names_the_dead_server(answer, story["url"]), answer
