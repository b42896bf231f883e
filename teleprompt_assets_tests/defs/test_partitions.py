from datetime import date

import dagster as dg
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from hypothesis import given
from hypothesis import strategies as st

from teleprompt_assets.defs.partitions import Target, contiguous, key_of, program_day_partitions, run_label, run_tags, target_of, window_of

PROGRAMS = ["billing", "outreach_reply", "ticket_router"]


def test_keys_name_the_day_then_the_program():
    assert key_of("ticket_router", "2026-11-02") == "2026-11-02|ticket_router"
    assert target_of("2026-11-02|ticket_router") == Target("2026-11-02|ticket_router", "ticket_router", "2026-11-02")


@given(st.lists(st.sampled_from(PROGRAMS), unique=True))
def test_contiguous_groups_cover_the_wanted_programs_once_each_as_neighbours(wanted):
    groups = contiguous(PROGRAMS, wanted)
    assert sorted(p for g in groups for p in g) == sorted(wanted)
    for group in groups:
        at = [PROGRAMS.index(p) for p in group]
        assert at == list(range(at[0], at[0] + len(at)))
    for left, right in zip(groups, groups[1:]):
        assert PROGRAMS.index(right[0]) > PROGRAMS.index(left[-1]) + 1  # a gap is what splits two groups


def test_contiguous_names_an_unknown_program():
    assert contiguous(PROGRAMS, ["ticket_router", "billing"]) == [["billing"], ["ticket_router"]]
    with pytest.raises(ValueError, match="unknown program.s. nope; registered: billing, outreach_reply, ticket_router"):
        contiguous(PROGRAMS, ["nope"])


def test_run_tags_name_one_partition_or_a_range_that_covers_exactly_the_programs():
    partitions = program_day_partitions(date(2026, 1, 1), PROGRAMS)
    one = run_tags(partitions, ["ticket_router"], "2026-11-02")
    assert one["dagster/partition"] == "2026-11-02|ticket_router" and run_label(one) == "2026-11-02|ticket_router"
    both = run_tags(partitions, ["outreach_reply", "ticket_router"], "2026-11-02")
    span = dg.PartitionKeyRange(both[ASSET_PARTITION_RANGE_START_TAG], both[ASSET_PARTITION_RANGE_END_TAG])
    assert sorted(map(str, partitions.get_partition_keys_in_range(span))) == ["2026-11-02|outreach_reply", "2026-11-02|ticket_router"]
    days = run_tags(partitions, PROGRAMS, "2026-11-01", "2026-11-02")
    span = dg.PartitionKeyRange(days[ASSET_PARTITION_RANGE_START_TAG], days[ASSET_PARTITION_RANGE_END_TAG])
    assert len(partitions.get_partition_keys_in_range(span)) == 6
    assert run_label(days) == "2026-11-01|billing..2026-11-02|ticket_router"


def test_a_window_takes_its_own_program_and_days_oldest_first():
    loaded = {key_of(p, d): f"{p}@{d}" for p in PROGRAMS for d in ("2026-10-30", "2026-10-31", "2026-11-01", "2026-11-02")}
    target = target_of("2026-11-01|outreach_reply")
    assert window_of(loaded, target, 2) == ["outreach_reply@2026-10-31", "outreach_reply@2026-11-01"]
    assert window_of({}, target, 7) == []
