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


# --- label factor, pooled credit and splitting (issue 17) ----------------------------------------

from teleprompt_assets.reward.attribution import SYSTEMATIC_MIN_FLAGS, label_agreement, label_factor, pooled_credit  # noqa: E402

FLAG = "likely_mislabeled"


def labels(contributor: str, kept: int, flagged: list[tuple[str, str]]) -> list[tuple[str, str, str | None, str | None]]:
    return [(contributor, "billing", None, None)] * kept + [(contributor, given, FLAG, suggested) for given, suggested in flagged]


def test_a_clean_labeler_keeps_its_full_worth_and_unlabeled_data_is_not_judged():
    assert label_factor(labels(A, 50, [])) == {A: 1}
    assert label_factor([(B, None, None, None)] * 10) == {B: 1}
    assert label_agreement([(B, None, None)] * 10) == {}


def test_each_wrong_label_cancels_a_good_one_so_random_labels_earn_nothing():
    # k = 5 classes labeled at random: 1/5 right, 4/5 flagged (spread over many pairs)
    pairs = [(given, suggested) for given in "abcde" for suggested in "abcde" if given != suggested]
    random_labeler = labels(A, 20, pairs * 4)
    assert label_factor(random_labeler)[A] == 0
    slips = labels(A, 40, [("a", "b"), ("c", "d"), ("e", "a"), ("b", "c")])  # 4 flags: below the pattern threshold, λ = 1
    assert label_factor(slips)[A] == Fraction(40, 44) * Fraction(40 - 4, 40)


def test_a_systematic_flip_weighs_twice_once_there_is_a_pattern():
    flips = labels(A, 40, [("billing", "sales")] * SYSTEMATIC_MIN_FLAGS)
    assert label_factor(flips)[A] == Fraction(40, 45) * Fraction(40 - 2 * SYSTEMATIC_MIN_FLAGS, 40)
    under = labels(A, 40, [("billing", "sales")] * (SYSTEMATIC_MIN_FLAGS - 1))
    assert label_factor(under)[A] == Fraction(40, 44) * Fraction(40 - (SYSTEMATIC_MIN_FLAGS - 1), 40)
    assert label_factor(labels(A, 3, [("billing", "sales")] * 10))[A] == 0  # floored, never negative


def test_a_helpful_demo_is_shared_by_the_traces_like_it_and_a_harmful_one_earns_nothing():
    pool = [(A, "billing")] * 3 + [(B, "billing")] * 1 + [(C, "sales")] * 2
    credit = pooled_credit([(A, "billing", Fraction(8))], pool)
    assert credit == {A: 6, B: 2}  # C's traces are another label: not like the demo
    assert pooled_credit([(A, "billing", Fraction(8)), (B, "billing", Fraction(-5)), (C, "sales", Fraction(0))], pool) == {A: 6, B: 2}
    assert pooled_credit([(A, None, Fraction(4))], [(A, None), (B, None)]) == {A: 2, B: 2}  # free text: one pool
    weighted = pooled_credit([(A, "billing", Fraction(8))], [(A, "billing"), (B, "billing")], {A: Fraction(1), B: Fraction(1, 3)})
    assert weighted == {A: 6, B: 2}


@given(
    body=st.lists(st.sampled_from(['{"ok": true}', '{"ok": false}', '{"csat": 0.5}']), min_size=1, max_size=40),
    others=st.lists(st.tuples(st.sampled_from([B, C]), st.sampled_from(['{"ok": true}', '{"csat": 0.25}'])), min_size=1, max_size=40),
    parts=st.integers(2, 5),
    demo_units=st.lists(st.integers(-3, 10), max_size=6),
)
def test_splitting_one_body_of_data_over_addresses_does_not_raise_its_share(body, others, parts, demo_units):
    """Without the cap (which limits an address, not a party), volume, quality and pooled impact are
    sums over traces, so a party's total is the same on one address or many, up to rounding."""
    mix = RewardMix(cap=1)
    sybils = ["0x" + f"{i:x}" * 40 for i in range(1, parts + 1)]
    split_body = [(sybils[i % parts], fb) for i, fb in enumerate(body)]

    def total(traces, owners):
        pool = [(c, "x") for c, _ in traces]
        demos = [(traces[i % len(traces)][0], "x", Fraction(u)) for i, u in enumerate(demo_units)]
        rows = reward_weights(traces, [d[0] for d in demos], pooled_credit(demos, pool), mix)
        return sum(r.weight_ppm for r in rows if r.contributor in owners)

    whole = total([(A, fb) for fb in body] + others, {A})
    split = total(split_body + others, set(sybils))
    assert split <= whole + parts  # largest-remainder rounding: at most one ppm per address
