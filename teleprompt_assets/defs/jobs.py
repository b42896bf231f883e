"""Operational jobs launched by hand from the Dagster UI: rolling a program's champion back."""

import dagster as dg

from teleprompt_assets import registry
from teleprompt_assets.defs.resources import TelepromptResource
from teleprompt_assets.lm import build_lm


class RollbackConfig(dg.Config):
    program: str
    to_version: int | None = None
    reason: str = "rollback from the Dagster UI"


@dg.op
def rollback_champion(context: dg.OpExecutionContext, config: RollbackConfig, teleprompt: TelepromptResource) -> dict:
    """Validate the target version (loads, runs), then move `champion` to it; recorded in tags."""
    spec = teleprompt.spec(config.program)
    done = registry.rollback(teleprompt.client(), spec, build_lm(), config.to_version, config.reason)
    context.log.info(f"{done.name}: champion moved from v{done.from_version} back to v{done.to_version}")
    context.add_output_metadata({"model": done.name, "from_version": done.from_version, "to_version": done.to_version})
    return {"name": done.name, "from_version": done.from_version, "to_version": done.to_version}


@dg.job(description="Move a program's champion alias back to an earlier, validated version.")
def rollback_job():
    rollback_champion()
