from hypothesis import given
from hypothesis import strategies as st

from teleprompt_assets.core.outcomes import outcome_value, probability


def test_outcomes_read_as_numbers_or_not_at_all():
    values = (True, 0, 0.5, "true", " FALSE ", "0.25", "sales", None, float("nan"), "inf", [1])
    assert [outcome_value(v) for v in values] == [1.0, 0.0, 0.5, 1.0, 0.0, 0.25, None, None, None, None, None]


@given(st.one_of(st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=8)))
def test_a_probability_is_an_outcome_within_the_unit_interval(value):
    p = probability(value)
    assert p is None or (0 <= p <= 1 and p == outcome_value(value))
