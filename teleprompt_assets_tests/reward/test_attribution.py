from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from teleprompt_assets.core.config import RewardMix
from teleprompt_assets.reward.attribution import PPM, apply_cap, largest_remainder, reward_weights

A, B, C = "0x" + "a" * 40, "0x" + "b" * 40, "0x" + "c" * 40


@given(st.dictionaries(st.text("0123456789abcdef", min_size=1, max_size=6), st.fractions(min_value=0, max_value=1000), min_size=1, max_size=20))
def test_largest_remainder_sums_exactly_and_stays_within_one_unit(weights):
    out = largest_remainder(weights)
    total = sum(w for w in weights.values() if w > 0)
    if total == 0:
        assert out == {}
        return
    assert sum(out.values()) == PPM
    for key, value in out.items():
        assert abs(Fraction(value) - weights[key] * PPM / total) < 1


def test_ties_go_to_the_lower_address():
    assert largest_remainder({B: Fraction(1), A: Fraction(1), C: Fraction(1)}) == {A: 333_334, B: 333_333, C: 333_333}


def test_volume_quality_and_impact_mix():
    no_cap = RewardMix(cap=1)
    rows = {r.contributor: r for r in reward_weights([(A, '{"ok": true}'), (A, '{"ok": true}'), (B, '{"ok": false}')], [A], {A: Fraction(5)}, no_cap)}
    assert sum(r.weight_ppm for r in rows.values()) == PPM
    # volume 2/3 vs 1/3, quality 1 vs 0, impact 1 vs 0 under the 2:1:2 default mix
    assert rows[A].weight_ppm == 866_667 and rows[B].weight_ppm == 133_333
    capped = {r.contributor: r.weight_ppm for r in reward_weights([(A, '{"ok": true}'), (A, '{"ok": true}'), (B, '{"ok": false}')], [A], {A: Fraction(5)})}
    assert capped == {A: 500_000, B: 500_000}


@given(st.lists(st.fractions(min_value=0, max_value=100), min_size=1, max_size=12), st.fractions(min_value=Fraction(1, 20), max_value=1))
def test_cap_holds_sums_to_one_and_keeps_order(values, cap):
    weights = {f"0x{i:040x}": v for i, v in enumerate(values)}
    if sum(values) == 0:
        return
    shares = apply_cap(weights, cap)
    assert sum(shares.values()) == 1
    bound = max(cap, Fraction(1, sum(1 for v in values if v > 0)))
    assert all(v <= bound for v in shares.values())
    ordered = sorted(weights, key=weights.get)
    assert all(shares[a] <= shares[b] for a, b in zip(ordered, ordered[1:]))


def test_flooding_duplicates_gains_nothing():
    """Duplicates are removed before attribution; what arrives is one trace per distinct input."""
    honest = reward_weights([(A, "{}"), (B, "{}")], [])
    assert [r.weight_ppm for r in honest] == [500_000, 500_000]


def test_no_demos_drops_impact_and_renormalizes():
    rows = reward_weights([(A, "{}"), (A, "{}"), (A, "{}"), (B, "{}")], [], {}, RewardMix(cap=1))
    assert [r.weight_ppm for r in rows] == [750_000, 250_000]


def test_demo_credit_goes_to_each_demos_contributor():
    from fractions import Fraction

    from teleprompt_assets.reward.attribution import demo_credit

    credits = [(None, None, Fraction(3)), (None, None, Fraction(1, 2)), (None, None, Fraction(5))]
    demos = [{"contributor": "a"}, {"contributor": "a"}, {"contributor": None}]
    assert demo_credit(credits, demos) == {"a": Fraction(7, 2)}
