"""Fault injection (issue 8): LM failures during compile and SIGKILL at the worst moments.

One store (a copy of the seeded template) goes through, in order:

1. four LM faults while compiling, each in a run of the real job: the LM erroring (transport
   error), timing out (the per-call timeout firing), answering unparseable text, and hanging
   (the compile's time limit must end it);
2. four runs killed with SIGKILL: during compilation (killed from outside once the step has
   started), right after the model version is created, halfway through writing the bundle, and
   after the bundle is published but before the version records it; each run re-executes what the
   previous one left undone, as Dagster's "re-execute from failure" does;
3. a full, healthy run, which must complete normally.

After every step the store must hold no half state (see ``reliability.inspect_store``): no version
without lineage tags, no duplicate version, an alias with its promotion record, no partial bundle
in the outbox, no bundle without its version, no attestation tag without its bundle.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from teleprompt_assets.core.settings import load_settings
from teleprompt_assets.core.tracking import connect
from teleprompt_assets.register import registry
from teleprompt_assets_tests.reliability import (  # noqa: F401 - fixtures
    FAST_RETRY,
    MODEL,
    Store,
    config_with,
    environment,
    failure_of,
    fast_tmp,
    fresh_store,
    inspect_store,
    outputs,
    pipeline_env,
    register_sample,
    run_job,
    scratch_root,
    start_promote,
    start_run,
    step_events,
    use_lm,
    wait_child,
    warm_home,
)

FROM_COMPILE = ["compiled_program", "evaluation_report", "registered_version", "champion_alias", "contributor_rewards", "deltaone_attestation"]
# contributor_rewards reads the evaluation and so runs after it: a kill at registration leaves it undone
FROM_REGISTRATION = ["registered_version", "champion_alias", "contributor_rewards", "deltaone_attestation"]
LM_FAULTS = {  # mode: what the failure message must name
    "error": "LMTransportError",
    "timeout": "LMTimeoutError",
    "garbage": "AdapterParseError",
    "hang": "time limit of 1 s",
}


@dataclass
class Outcome:
    exit: int | None  # a child's exit code (-9: SIGKILL); None for an in-process run
    success: bool | None
    message: str | None
    seconds: float
    store: Store
    staging: list[str]
    transient: bool | None = None
    retried: bool | None = None
    outputs: dict | None = None


@pytest.fixture(scope="module")
def story():
    dest = Path(tempfile.mkdtemp(prefix="tp-faults-", dir=scratch_root()))
    home = fresh_store(dest)
    env = pipeline_env(home) | FAST_RETRY
    instance_dir = dest / "dagster"
    seen: dict[str, Outcome] = {}

    def record(label: str, started: float, exit_code: int | None = None, result: dg.ExecuteInProcessResult | None = None, step: str = "compiled_program") -> None:
        staging = home / "staging"
        seen[label] = Outcome(exit_code, result.success if result is not None else None, failure_of(result, step) if result is not None else None,
                              time.perf_counter() - started, inspect_store(), sorted(p.name for p in staging.iterdir()) if staging.exists() else [])

    try:
        with environment(env):
            # 1. LM faults, in process: each run fails at compiled_program (one immediate retry allowed: FAST_RETRY)
            hang_config = config_with(dest, time_limit_s=1)
            with pytest.MonkeyPatch.context() as patch, dg.instance_for_test(temp_dir=str(instance_dir)) as instance:
                for i, mode in enumerate(LM_FAULTS):
                    use_lm(mode, setattr_=patch.setattr)
                    os.environ["TELEPROMPT_CONFIG"] = str(hang_config if mode == "hang" else env["TELEPROMPT_CONFIG"])
                    started = time.perf_counter()
                    result = run_job(instance, assets=None if i == 0 else FROM_COMPILE)
                    record(mode, started, result=result)
                    seen[mode].transient = _failure_metadata(result).get("transient")
                    seen[mode].retried = any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)
                os.environ["TELEPROMPT_CONFIG"] = env["TELEPROMPT_CONFIG"]
                compile_starts = len(step_events(instance, "compiled_program.compile_program", dg.DagsterEventType.STEP_START))
                compile_successes = len(step_events(instance, "compiled_program.compile_program", dg.DagsterEventType.STEP_SUCCESS))

            # 2a. SIGKILL during compilation, from outside: a slow healthy LM, killed 0.3 s into the step
            started = time.perf_counter()
            child = start_run(env, instance_dir, "slow_lm", FROM_COMPILE)
            with dg.instance_for_test(temp_dir=str(instance_dir)) as instance:
                deadline = time.monotonic() + 60
                while len(step_events(instance, "compiled_program.compile_program", dg.DagsterEventType.STEP_START)) == compile_starts:
                    assert time.monotonic() < deadline and child.is_alive(), "the child never started compiling"
                    time.sleep(0.05)
                time.sleep(0.3)
                os.kill(child.pid, signal.SIGKILL)
                code = wait_child(child)
                killed_mid_compile = len(step_events(instance, "compiled_program.compile_program", dg.DagsterEventType.STEP_SUCCESS)) == compile_successes
            record("kill_compile", started, code)
            seen["kill_compile"].message = "compiled_program had not finished" if killed_mid_compile else "compiled_program finished first"

            # 2b. killed right after the registry created the version
            started = time.perf_counter()
            record("kill_registration", started, wait_child(start_run(env, instance_dir, "kill_after_version", FROM_COMPILE)))

            # 2c. killed after writing 3 of the bundle's 7 files
            started = time.perf_counter()
            record("kill_mid_bundle", started, wait_child(start_run(env, instance_dir, "kill_mid_bundle", FROM_REGISTRATION)))

            # 2d. killed after the bundle is published, before the version is tagged with it
            started = time.perf_counter()
            record("kill_before_tag", started, wait_child(start_run(env, instance_dir, "kill_before_attestation_tag", ["deltaone_attestation"])))

            # 3. a full, healthy re-run
            started = time.perf_counter()
            with dg.instance_for_test(temp_dir=str(instance_dir)) as instance:
                result = run_job(instance)
            record("rerun", started, result=result, step="")
            seen["rerun"].outputs = outputs(result) if result.success else None
        yield seen
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def _failure_metadata(result: dg.ExecuteInProcessResult) -> dict:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.user_failure_data:
            return {k: v.value for k, v in event.step_failure_data.user_failure_data.metadata.items()}
    return {}


def _clean(outcome: Outcome) -> None:
    assert outcome.store.problems == [], outcome.store.problems


@pytest.mark.parametrize("mode", list(LM_FAULTS))
def test_an_lm_fault_while_compiling_fails_the_run_cleanly(story, mode):
    outcome = story[mode]
    assert outcome.success is False
    assert outcome.message and "compile failed, nothing registered" in outcome.message and LM_FAULTS[mode] in outcome.message, outcome.message
    assert outcome.transient is (mode in ("error", "timeout"))  # only these are left to the step's retry policy
    assert outcome.retried is outcome.transient
    assert outcome.store.versions == {} and outcome.store.champion is None and outcome.store.bundles == []
    assert outcome.staging == []
    _clean(outcome)


def test_a_hanging_lm_is_stopped_by_the_compile_time_limit(story):
    """The LM would hang 30 s per call; the 1 s limit must end the compile, not just one call."""
    assert story["hang"].seconds < 20, story["hang"].seconds


def test_sigkill_during_compilation_leaves_nothing(story):
    outcome = story["kill_compile"]
    assert outcome.exit == -signal.SIGKILL
    assert outcome.message == "compiled_program had not finished"
    assert outcome.store.versions == {} and outcome.store.champion is None and outcome.store.bundles == []
    _clean(outcome)


def test_sigkill_right_after_the_version_is_created_leaves_a_complete_version(story):
    outcome = story["kill_registration"]
    assert outcome.exit == -signal.SIGKILL
    assert list(outcome.store.versions) == [1]  # with every lineage tag: checked by _clean
    assert outcome.store.champion is None and outcome.store.bundles == []
    _clean(outcome)


def test_sigkill_halfway_through_the_bundle_leaves_no_partial_bundle(story):
    outcome = story["kill_mid_bundle"]
    assert outcome.exit == -signal.SIGKILL
    assert list(outcome.store.versions) == [1] and outcome.store.champion == 1
    assert outcome.store.bundles == []  # the three files written sit in staging, outside the outbox
    assert len(outcome.staging) == 1 and "attestation_uid" not in outcome.store.versions[1]
    _clean(outcome)


def test_sigkill_between_publishing_and_recording_leaves_a_verifiable_bundle(story):
    outcome = story["kill_before_tag"]
    assert outcome.exit == -signal.SIGKILL
    assert len(outcome.store.bundles) == 1 and "attestation_uid" not in outcome.store.versions[1]
    assert outcome.staging == []  # the folder the killed writer abandoned was removed by the next one
    _clean(outcome)  # the bundle verifies against v1's registered program hash


def test_a_healthy_rerun_completes_normally(story):
    outcome = story["rerun"]
    assert outcome.success, outcome.message
    out = outcome.outputs
    assert out["registered_version"]["version"] == 1 and out["registered_version"]["created"] is False
    assert out["champion_alias"]["champion_version"] == 1
    att = out["deltaone_attestation"]
    assert att["attested"] and att["verifies"]
    assert [b.name for b in outcome.store.bundles] == [att["uid"]]
    assert outcome.store.versions[1]["attestation_uid"] == att["uid"]
    assert outcome.staging == []
    _clean(outcome)


def test_a_promotion_killed_after_the_alias_moved_is_completed_by_the_rerun(warm_home):
    """Kill the process right after ``champion`` moves (the old champion not yet marked demoted)."""
    client = connect(load_settings())
    v1, v2 = register_sample("shipping"), register_sample("billing", window="w2")
    registry.promote(client, MODEL, v1.version, "first")
    assert wait_child(start_promote(pipeline_env(warm_home), "kill_after_alias", MODEL, v2.version, "better")) == -signal.SIGKILL
    assert int(registry.champion(client, MODEL).version) == v2.version
    assert client.get_model_version(MODEL, str(v2.version)).tags["promoted_at"]  # recorded before the move
    assert "demoted_at" not in client.get_model_version(MODEL, str(v1.version)).tags
    assert registry.promote(client, MODEL, v2.version, "better") == v2.version  # the re-run
    assert client.get_model_version(MODEL, str(v1.version)).tags["demoted_at"]
    assert client.get_model_version(MODEL, str(v2.version)).tags["previous_champion"] == str(v1.version)


def test_the_time_limit_cannot_be_swallowed():
    """An optimizer that catches every exception per example (as DSPy's do) still stops at the limit."""
    from teleprompt_assets.optimize.teleprompters import CompileTimeout, time_limit

    started = time.perf_counter()
    with pytest.raises(CompileTimeout, match="time limit of 1 s"):
        with time_limit(1):
            for _ in range(12):  # 12 blocking "LM calls" of 0.5 s (6 s without a limit), each failure swallowed
                try:
                    time.sleep(0.5)
                except Exception:  # noqa: BLE001, S112
                    continue
    assert time.perf_counter() - started < 3


def test_an_lm_outage_while_evaluating_is_not_scored_as_wrong_answers():
    import dspy

    from teleprompt_assets.core.spec import load_project
    from teleprompt_assets.evaluate import scoring
    from teleprompt_assets_tests.conftest import REPO
    from teleprompt_assets_tests.reliability import PROGRAM, faulty_lm

    spec = load_project(REPO / "teleprompt.yaml")[1][PROGRAM]
    holdout = [dspy.Example(message=f"My package for order #{n} has not arrived yet.", queue="shipping", trace_id=f"t{n}",
                            trace_hash=f"0x{n:064x}", contributor="0x" + "a" * 40).with_inputs("message") for n in range(3)]
    with pytest.raises(scoring.EvaluationAborted, match="TransportError"):
        scoring.score_pair(spec.build(), spec.build(), holdout, lambda ex, pred, trace=None: float(ex.queue == pred.queue),
                            faulty_lm("error"), "queue")
