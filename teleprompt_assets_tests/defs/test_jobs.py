import dagster as dg

from teleprompt_assets.definitions import build_definitions
from teleprompt_assets.defs.resources import TelepromptResource
from teleprompt_assets.register import registry
from teleprompt_assets_tests.register.test_registry import _register, reg  # noqa: F401 - fixture


def test_rollback_job_moves_the_champion_back(reg):  # noqa: F811
    client, spec, _ = reg
    name = spec.registered_model_name
    v1, v2 = _register(reg, "shipping"), _register(reg, "billing", window="w2")
    registry.promote(client, name, v1.version, "first")
    registry.promote(client, name, v2.version, "second")
    with dg.instance_for_test() as instance:
        job = build_definitions().resolve_job_def("rollback_job")  # resolved under this instance's defs-state storage
        result = job.execute_in_process(
            instance=instance, resources={"teleprompt": TelepromptResource()},
            run_config={"ops": {"rollback_champion": {"config": {"program": "ticket_router", "reason": "bad answers in prod"}}}},
        )
    assert result.success
    assert result.output_for_node("rollback_champion") == {"name": name, "from_version": v2.version, "to_version": v1.version}
    assert int(registry.champion(client, name).version) == v1.version
    assert client.get_model_version(name, str(v2.version)).tags["rollback_reason"] == "bad answers in prod"


def test_rollback_job_refuses_a_version_that_never_served_unless_forced(reg):  # noqa: F811
    client, spec, _ = reg
    name = spec.registered_model_name
    never, v2 = _register(reg, "account", window="w0"), _register(reg, "shipping", window="w1")
    registry.promote(client, name, v2.version, "first")
    config = {"program": "ticket_router", "to_version": never.version}
    with dg.instance_for_test() as instance:
        job = build_definitions().resolve_job_def("rollback_job")
        refused = job.execute_in_process(instance=instance, resources={"teleprompt": TelepromptResource()}, raise_on_error=False,
                                         run_config={"ops": {"rollback_champion": {"config": config}}})
        assert not refused.success and int(registry.champion(client, name).version) == v2.version
        failure = next(e for e in refused.all_events if e.is_step_failure).step_failure_data.user_failure_data
        assert "never served" in failure.description and "--force" in failure.description
        forced = job.execute_in_process(instance=instance, resources={"teleprompt": TelepromptResource()},
                                        run_config={"ops": {"rollback_champion": {"config": config | {"force": True}}}})
    assert forced.success and int(registry.champion(client, name).version) == never.version
    assert "never served" in client.get_model_version(name, str(never.version)).tags["forced"]
