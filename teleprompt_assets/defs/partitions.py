"""Partitions: every asset is per program × day; the training window reaches back N days."""

from __future__ import annotations

from datetime import date

import dagster as dg

DATE = "date"
PROGRAM = "program"


def program_day_partitions(start: date, programs: list[str]) -> dg.MultiPartitionsDefinition:
    return dg.MultiPartitionsDefinition({
        DATE: dg.DailyPartitionsDefinition(start_date=start.isoformat(), timezone="UTC"),
        PROGRAM: dg.StaticPartitionsDefinition(sorted(programs)),
    })


def window_mapping(window_days: int) -> dg.MultiPartitionMapping:
    """Same program, the last ``window_days`` days up to and including the partition's day."""
    return dg.MultiPartitionMapping({
        DATE: dg.DimensionPartitionMapping(DATE, dg.TimeWindowPartitionMapping(start_offset=-(window_days - 1), end_offset=0, allow_nonexistent_upstream_partitions=True)),
        PROGRAM: dg.DimensionPartitionMapping(PROGRAM, dg.IdentityPartitionMapping()),
    })


def split_key(context: dg.AssetExecutionContext) -> tuple[str, str]:
    """(program, day) of the partition being materialized."""
    keys = context.partition_key.keys_by_dimension  # type: ignore[attr-defined]
    return keys[PROGRAM], keys[DATE]
