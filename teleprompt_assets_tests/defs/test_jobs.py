import dagster as dg

from teleprompt_assets import registry
from teleprompt_assets.definitions import build_definitions
from teleprompt_assets.defs.resources import TelepromptResource
from teleprompt_assets_tests.test_registry import _register, reg  # noqa: F401 - fixture


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
