"""The asset graph (docs/architecture.md#flow), per program × day, one module per stage in the order data flows.

A step materializes every program × day of its run (``partitions.targets``), one after another; the
LM-bound assets (``compiled_program``, ``evaluation_report``, ``contributor_rewards``) fan out one
step per program instead (``defs/fanout.py``), so a run's programs go through them side by side.
"""

import dagster as dg

from teleprompt_assets.defs.attest import build_deltaone_attestation
from teleprompt_assets.defs.curate import build_curate
from teleprompt_assets.defs.evaluate import build_evaluation_report
from teleprompt_assets.defs.ingest import build_raw_traces
from teleprompt_assets.defs.optimize import build_compiled_program
from teleprompt_assets.defs.register import build_champion_alias, build_registered_version
from teleprompt_assets.defs.reward import build_contributor_rewards
from teleprompt_assets.defs.training import build_training_set

GROUP = "teleprompt"


def build_assets(partitions: dg.PartitionsDefinition, window_days: int) -> list[dg.AssetsDefinition]:
    return [
        build_raw_traces(partitions, GROUP),
        build_curate(partitions, GROUP),
        build_training_set(partitions, GROUP, window_days),
        build_compiled_program(partitions, GROUP),
        build_evaluation_report(partitions, GROUP),
        build_registered_version(partitions, GROUP, window_days),
        build_champion_alias(partitions, GROUP),
        build_contributor_rewards(partitions, GROUP),
        build_deltaone_attestation(partitions, GROUP),
    ]
