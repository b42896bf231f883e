"""One asset check result per step, for the one or several programs the step materialized.

A check declared on a partitioned asset reports once per step, so with several programs in a run
the verdicts are folded: it passes if every program passes, and the metadata and description name
the program each figure belongs to.
"""

from typing import Any, NamedTuple

import dagster as dg

from teleprompt_assets.defs.partitions import Target


class Verdict(NamedTuple):
    target: Target
    passed: bool
    metadata: dict[str, Any]
    description: str | None = None


def combined_check(name: str, asset: str, verdicts: list[Verdict], partial: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
                   failed: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR) -> dg.AssetCheckResult:
    """``partial``: the severity when some programs fail and others pass (ERROR blocks them all);
    ``failed``: the severity when every program fails."""
    if len(verdicts) == 1:
        [v] = verdicts
        return dg.AssetCheckResult(check_name=name, asset_key=asset, passed=v.passed, metadata=v.metadata, description=v.description,
                                   severity=dg.AssetCheckSeverity.ERROR if v.passed else failed)
    failing = [v for v in verdicts if not v.passed]
    metadata = {f"{v.target.program}.{k}": value for v in verdicts for k, value in v.metadata.items()}
    description = "; ".join(f"{v.target.program}: {v.description or 'failed'}" for v in failing) or None
    severity = partial if failing and len(failing) < len(verdicts) else failed if failing else dg.AssetCheckSeverity.ERROR
    return dg.AssetCheckResult(check_name=name, asset_key=asset, passed=not failing, metadata=metadata, description=description, severity=severity)
