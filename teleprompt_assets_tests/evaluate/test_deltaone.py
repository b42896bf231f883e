from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from teleprompt_assets.evaluate.deltaone import ExampleScore, bootstrap_ci, compare, delta_ppm, is_deltaone, quantize


def exact_rule(b: int, c: int, n: int) -> bool:
    """The DESIGN §6 rule as rationals: C / B >= 101/100, or one absolute point when B = 0."""
    if b > 0:
        return Fraction(c, b) >= Fraction(101, 100)
    return n > 0 and Fraction(c, n * 10**6) >= Fraction(1, 100)


def test_exactly_one_percent_holds_and_one_unit_below_does_not():
    b = 50_000_000
    assert is_deltaone(b, 50_500_000, 100)
    assert not is_deltaone(b, 50_499_999, 100)
    assert delta_ppm(b, 50_500_000, 100) == 10_000
    assert delta_ppm(b, 50_499_999, 100) == 9_999


def test_boundary_when_b_is_not_a_multiple_of_100():
    b = 12_345_679
    c = b + (b + 99) // 100  # smallest C with 100·(C − B) ≥ B
    assert is_deltaone(b, c, 20) and not is_deltaone(b, c - 1, 20)


def test_zero_baseline_needs_one_absolute_point():
    assert is_deltaone(0, 40 * 10_000, 40)
    assert not is_deltaone(0, 40 * 10_000 - 1, 40)
    assert not is_deltaone(0, 0, 0)
    assert delta_ppm(0, 400_000, 40) == 10_000


def test_regression_is_never_deltaone_and_delta_floors_toward_minus_infinity():
    assert not is_deltaone(3, 2, 1)
    assert delta_ppm(3, 2, 1) == -333_334


def test_quantize_is_round_half_even_on_the_exact_value():
    assert quantize(0.5) == 500_000
    assert quantize(Fraction(1, 2_000_000)) == 0
    assert quantize(Fraction(3, 2_000_000)) == 2
    assert quantize(1) == 1_000_000 and quantize(True) == 1_000_000
    assert quantize(0.0000005) == 0  # the float is slightly below 5e-7
    with pytest.raises(ValueError):
        quantize(1.0000001)
    with pytest.raises(ValueError):
        quantize(-0.1)


@given(st.integers(0, 12), st.integers(0, 12), st.integers(1, 3))
def test_rule_equals_exact_rational_comparison_small_grid(b_units, c_units, n):
    b, c = b_units * 50_000, c_units * 50_000
    assert is_deltaone(b, c, n) == exact_rule(b, c, n)


@given(st.integers(1, 10**4), st.data())
def test_rule_equals_exact_rational_comparison_large(n, data):
    b = data.draw(st.integers(0, n * 10**6))
    c = data.draw(st.integers(0, n * 10**6))
    assert is_deltaone(b, c, n) == exact_rule(b, c, n)
    if b > 0:
        assert delta_ppm(b, c, n) == (Fraction(c - b, b) * 10**6).__floor__()


@given(st.integers(1, 10**9))
def test_boundary_for_every_baseline(b):
    smallest = b + -(-b // 100)
    assert is_deltaone(b, smallest, 1_000) and not is_deltaone(b, smallest - 1, 1_000)


@settings(max_examples=25)
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)), min_size=1, max_size=30), st.integers(0, 2**32))
def test_bootstrap_is_reproducible_and_ordered(pairs, seed):
    qb, qc = [p[0] for p in pairs], [p[1] for p in pairs]
    low, high = bootstrap_ci(qb, qc, seed, 200)
    assert (low, high) == bootstrap_ci(qb, qc, seed, 200)
    assert low <= high


def test_compare_counts_wins_losses_ties_and_gates_on_significance():
    scores = [ExampleScore(f"0x{i:064x}", str(i), "0x0", b, c, "", "") for i, (b, c) in enumerate([(0, 10**6)] * 30 + [(10**6, 10**6)] * 30)]
    result = compare(scores)
    assert (result.wins, result.losses, result.ties) == (30, 0, 30)
    assert result.deltaone and result.significant and result.attestable
    flat = compare([ExampleScore("0x0", "1", "0x0", 10**6, 10**6, "", "")] * 10)
    assert not flat.deltaone and not flat.attestable


def test_rule_equals_exact_comparison_on_an_exhaustive_grid():
    """Every (B, C) for n ≤ 3 at a resolution that contains every boundary exactly."""
    for n in range(1, 4):
        top = n * 10**6
        grid = sorted({*range(0, top + 1, 10_000), *range(0, 30_001), *(b + -(-b // 100) + d for b in range(0, top + 1, 10_000) for d in (-1, 0, 1))})
        grid = [x for x in grid if 0 <= x <= top]
        for b in grid[:: max(1, len(grid) // 600)]:
            for c in (b - 1, b, b + -(-b // 100) - 1, b + -(-b // 100), b + -(-b // 100) + 1, n * 10_000 - 1, n * 10_000, top):
                if 0 <= c <= top:
                    assert is_deltaone(b, c, n) == exact_rule(b, c, n), (b, c, n)
