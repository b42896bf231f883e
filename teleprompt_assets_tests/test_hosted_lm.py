"""The whole graph against an OpenAI-compatible server over real HTTP (issue 15).

The server (``samples/lm_server.py``) runs on 127.0.0.1 and answers with the offline learner, so a
run reaches the same registered version and attestation it would offline; in between, every call
travels through DSPy's client (or LiteLLM) as it would to a hosted provider, with latency, bursts
of 429 carrying ``Retry-After``, 5xx errors and real ``usage`` fields.
"""

from __future__ import annotations

import dagster as dg
import pytest

from teleprompt_assets_tests.reliability import (  # noqa: F401 - fixtures
    END,
    environment,
    failure_of,
    fast_tmp,
    fresh_store,
    inspect_store,
    outputs,
    pipeline_env,
    run_job,
    scratch_root,
)

pytestmark = pytest.mark.e2e

MODEL = "openai/offline-learner"
KEY = "sk-test-hosted"
FROM_EVALUATION = ["evaluation_report", "registered_version", "champion_alias", "contributor_rewards", "deltaone_attestation"]


def hosted_env(home, server, **extra: str) -> dict[str, str]:
    return pipeline_env(home) | {"TELEPROMPT_LM": MODEL, "TELEPROMPT_LM_API_BASE": server.base_url, "TELEPROMPT_LM_API_KEY": KEY} | extra


def evaluation_metadata(instance: dg.DagsterInstance) -> dict:
    [event] = instance.fetch_materializations(dg.AssetKey("evaluation_report"), limit=1).records
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


@pytest.mark.parametrize("engine", ["auto", "litellm"])
def test_429_bursts_and_5xx_slow_the_run_but_lose_and_duplicate_nothing(fast_tmp, engine):
    from teleprompt_assets.samples.lm_server import Faults, serve

    home = fresh_store(fast_tmp)
    faults = Faults(latency_ms=5, throttle_every=17, throttle_burst=3, retry_after_s=0.2, error_every=23, error_status=503)
    with serve(model="offline-learner", faults=faults, api_key=KEY) as server, \
            environment(hosted_env(home, server, TELEPROMPT_LM_RETRIES="8", TELEPROMPT_LM_ENGINE=engine)), \
            dg.instance_for_test(temp_dir=str(fast_tmp / "dagster")) as instance:
        result = run_job(instance)
        assert result.success, failure_of(result, "compiled_program") or failure_of(result, "evaluation_report")
        first, served = outputs(result), server.stats()
        store = inspect_store()
        report = evaluation_metadata(instance)

        assert served["throttled"] > 0 and served["errors"] > 0 and served["answered"] > 50
        assert report["lm_throttled"] + report["lm_retries"] > 0 or served["throttled"] > 0
        assert not store.problems, store.problems
        assert first["registered_version"]["version"] == 1 and store.champion == 1
        assert len(store.bundles) == 1 and first["deltaone_attestation"].get("attested")

        # the same partition again: the same version and bundle, and the evaluation pays for nothing new
        answered = server.stats()["answered"]
        again = run_job(instance)
        assert again.success
        store = inspect_store()
        assert sorted(store.versions) == [1] and len(store.bundles) == 1 and not store.problems
        report = evaluation_metadata(instance)
        assert report["answers_reused"] > 0 and report["lm_calls"] == 0, report
        assert server.stats()["answered"] - answered < answered  # the compile's sampled calls are paid again; held-out answers are not
    leaked = [str(path) for path in (home, fast_tmp / "dagster") for path in path.rglob("*") if path.is_file() and KEY.encode() in path.read_bytes()]
    assert leaked == [], f"the endpoint's key was written to {leaked}"


def test_an_outage_during_evaluation_stops_it_and_registers_nothing(fast_tmp):
    from teleprompt_assets.samples.lm_server import Faults, serve

    home = fresh_store(fast_tmp)
    with serve(model="offline-learner", faults=Faults(latency_ms=2), api_key=KEY) as server, \
            environment(hosted_env(home, server, TELEPROMPT_LM_RETRIES="1")), \
            dg.instance_for_test(temp_dir=str(fast_tmp / "dagster")) as instance:
        compiled = run_job(instance, assets=["raw_traces", "curated_traces", "quarantined_traces", "training_set", "compiled_program"])
        assert compiled.success, failure_of(compiled, "compiled_program")
        server.set_faults(outage=True)
        result = run_job(instance, assets=FROM_EVALUATION)
        assert not result.success
        message = failure_of(result, "evaluation_report")
        assert message and "evaluation stopped at held-out example" in message and "503" in message, message
        store = inspect_store()
        assert store.versions == {} and store.bundles == [] and not store.problems


def test_a_spent_budget_stops_the_run_cleanly_and_says_so(fast_tmp):
    import yaml

    from teleprompt_assets.samples.lm_server import Faults, serve

    home = fresh_store(fast_tmp)
    config = yaml.safe_load(open(pipeline_env(home)["TELEPROMPT_CONFIG"]).read())
    config["lm"] = {"budget": {"max_calls": 25}}
    path = fast_tmp / "teleprompt.yaml"
    path.write_text(yaml.safe_dump(config))
    with serve(model="offline-learner", faults=Faults(latency_ms=1), api_key=KEY) as server, \
            environment(hosted_env(home, server, TELEPROMPT_CONFIG=str(path))), \
            dg.instance_for_test(temp_dir=str(fast_tmp / "dagster")) as instance:
        result = run_job(instance)
        assert not result.success
        failed = [e.step_key for e in result.all_events if e.is_step_failure]
        assert failed, "the run went through on a budget of 25 calls"
        for step in failed:  # every LM-bound step still to run stops on the budget, each with the one line
            message = failure_of(result, step)
            assert "LM budget of run" in message and "(25 of 25 calls spent)" in message and "raise lm.budget" in message, message
        assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)
        assert server.stats()["answered"] <= 25
        store = inspect_store()
        assert store.versions == {} and store.bundles == [] and not store.problems
