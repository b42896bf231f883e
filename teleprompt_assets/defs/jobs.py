"""Operational jobs launched by hand from the Dagster UI: rolling a program's champion back."""

import dagster as dg
from pydantic import Field

from teleprompt_assets.core.lm import build_lm
from teleprompt_assets.defs.resources import TelepromptResource
from teleprompt_assets.register import rollback


class RollbackConfig(dg.Config):
    program: str
    to_version: int | None = Field(default=None, description="an older version that served before (default: the one the champion replaced)")
    reason: str = "rollback from the Dagster UI"
    force: bool = Field(default=False, description="also to a version that never served, or a newer one; warns and is recorded in its `forced` tag")


@dg.op
def rollback_champion(context: dg.OpExecutionContext, config: RollbackConfig, teleprompt: TelepromptResource) -> dict:
    """Validate the target version (loads, runs), then move `champion` back to it; recorded in tags.

    Only to an older version that served before, unless `force`: the same rules as `teleprompt rollback`.
    """
    spec = teleprompt.spec(config.program)
    try:
        done = rollback.rollback(teleprompt.client(), spec, build_lm(), config.to_version, config.reason, force=config.force)
    except rollback.RollbackError as exc:
        raise dg.Failure(description=f"rollback refused: {exc}", allow_retries=False) from None
    for warning in done.warnings:
        context.log.warning(f"{done.name} v{done.to_version}: {warning}")
    context.log.info(f"{done.name}: champion moved from v{done.from_version} back to v{done.to_version}")
    context.add_output_metadata({"model": done.name, "from_version": done.from_version, "to_version": done.to_version,
                                 "forced": "; ".join(done.warnings) or "no"})
    return {"name": done.name, "from_version": done.from_version, "to_version": done.to_version}


@dg.job(description="Move a program's champion alias back to an earlier, validated version that served before.")
def rollback_job():
    rollback_champion()
