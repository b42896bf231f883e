"""Partitions: every asset is per program × day; the training window reaches back N days.

A run holds one partition or a rectangle of them (days × a contiguous range of the sorted
programs). The daily cycle runs every program of a day in one run: each asset step then handles
every program of the run, and ``compiled_program`` fans out one step per program, so programs
compile in parallel under the multiprocess executor.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any, NamedTuple

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from teleprompt_assets.core.window import Window

DATE = "date"
PROGRAM = "program"


class Target(NamedTuple):
    """One program × day of a run: ``key`` is its multi-partition key (``day|program``)."""

    key: str
    program: str
    day: str


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


def window_label(day: str, window_days: int) -> str:
    """``first..last`` day of the training window ending on ``day`` (tags, metadata, registry lookups)."""
    return Window.ending(day, window_days).label


def key_of(program: str, day: str) -> str:
    return str(dg.MultiPartitionKey({DATE: day, PROGRAM: program}))


def target_of(key: str) -> Target:
    day, program = key.split("|")  # dimensions are ordered by name: date, program
    return Target(key, program, day)


def targets(context: dg.AssetExecutionContext | dg.OpExecutionContext) -> list[Target]:
    """The program × day partitions this step materializes, in key order (one, or a run's range)."""
    return sorted(target_of(str(k)) for k in context.partition_keys)


def window_days_of(day: str, window_days: int) -> list[str]:
    """The days of the training window ending on ``day``, oldest first."""
    return Window.ending(day, window_days).dates()


def window_of(loaded: Mapping[str, Any], target: Target, window_days: int) -> list[Any]:
    """The loaded upstream partitions in ``target``'s window (same program), oldest first."""
    window = Window.ending(target.day, window_days)
    picked = [target_of(k) for k in loaded]
    return [loaded[t.key] for t in sorted(picked, key=lambda t: t.day) if t.program == target.program and t.day in window]


def contiguous(all_programs: list[str], wanted: list[str]) -> list[list[str]]:
    """``wanted`` split into runs of neighbours in the sorted program dimension: a run's partitions
    must form a range, so programs skipped between two others start a new run."""
    order = sorted(all_programs)
    unknown = sorted(set(wanted) - set(order))
    if unknown:
        raise ValueError(f"unknown program(s) {', '.join(unknown)}; registered: {', '.join(order)}")
    groups: list[list[str]] = []
    last = None
    for index, program in enumerate(order):
        if program not in wanted:
            continue
        if groups and last == index - 1:
            groups[-1].append(program)
        else:
            groups.append([program])
        last = index
    return groups


def run_tags(partitions: dg.PartitionsDefinition, programs: list[str], day: str, last_day: str | None = None) -> dict[str, str]:
    """Tags that make one run materialize ``programs`` (neighbours, see ``contiguous``) from ``day``
    to ``last_day``: a partition's own tags for one, a partition range (a rectangle) for several."""
    first, last, end = min(programs), max(programs), last_day or day
    if first == last and end == day:
        return dict(partitions.get_tags_for_partition_key(key_of(first, day)))
    return {ASSET_PARTITION_RANGE_START_TAG: key_of(first, day), ASSET_PARTITION_RANGE_END_TAG: key_of(last, end)}


def run_label(tags: Mapping[str, str]) -> str | None:
    """The partition, or ``start..end`` range, a run's tags name."""
    if "dagster/partition" in tags:
        return tags["dagster/partition"]
    if ASSET_PARTITION_RANGE_START_TAG in tags:
        return f"{tags[ASSET_PARTITION_RANGE_START_TAG]}..{tags.get(ASSET_PARTITION_RANGE_END_TAG)}"
    return None
