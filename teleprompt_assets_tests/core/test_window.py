"""The training window's one value: its label round-trips, its days are exactly the window's."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from teleprompt_assets.core.window import Window, window_end

DAYS = st.integers(min_value=1, max_value=400)
LAST = st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1))


@given(LAST, DAYS)
def test_a_label_names_its_window_and_nothing_else(last, days):
    window = Window.ending(last.isoformat(), days)
    assert Window.parse(window.label) == window and str(window) == window.label
    assert window.label == f"{(last - timedelta(days=days - 1)).isoformat()}..{last.isoformat()}"
    assert window_end(window.label) == last.isoformat()


@given(LAST, DAYS)
def test_its_days_are_the_window_oldest_first_and_membership_agrees(last, days):
    window = Window.ending(last, days)
    listed = window.dates()
    assert len(listed) == days and listed == sorted(listed) and listed[-1] == last.isoformat() and listed[0] == window.first.isoformat()
    assert all(day in window for day in listed)
    assert (window.first - timedelta(days=1)).isoformat() not in window and (last + timedelta(days=1)) not in window


@pytest.mark.parametrize("label", ["", "2026-01-01", "2026-01-05..2026-01-01", "..", "2026-01-01..x", "x..2026-01-01"])
def test_anything_but_a_label_is_refused_and_has_no_end(label):
    with pytest.raises(ValueError):
        Window.parse(label)
    assert window_end(label) is None


@pytest.mark.parametrize("days", [0, -1, True, 1.5])
def test_a_window_holds_at_least_one_whole_day(days):
    with pytest.raises(ValueError):
        Window.ending("2026-01-01", days)
