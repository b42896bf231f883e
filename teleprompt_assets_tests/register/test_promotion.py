from hypothesis import given
from hypothesis import strategies as st

from teleprompt_assets.register.promotion import Candidate, Champion, decide

MIN = 20


def candidate(**fields) -> Candidate:
    base = {"version": 3, "baseline_version": 2, "baseline_sum": 10_000_000, "candidate_sum": 12_000_000, "n": 30, "window_end": "2026-11-20"}
    return Candidate(**(base | fields))


CHAMPION = Champion(2, "2026-11-19")


def test_a_better_candidate_measured_against_the_champion_is_promoted():
    decision = decide(candidate(), CHAMPION, MIN)
    assert decision.promote and decision.reason == "C=12000000 > B=10000000 on 30 holdout examples, measured against v2"


def test_the_minimum_holdout_is_a_boundary():
    assert decide(candidate(n=MIN), CHAMPION, MIN).promote
    refused = decide(candidate(n=MIN - 1), CHAMPION, MIN)
    assert not refused.promote and refused.reason == f"not promoted: measured on {MIN - 1} held-out examples, fewer than min_holdout={MIN}"


def test_an_empty_evaluation_never_promotes_even_against_nothing():
    assert not decide(candidate(baseline_version=0, baseline_sum=0, candidate_sum=0, n=0), None, MIN).promote


def test_ties_keep_the_incumbent_and_one_unit_more_promotes():
    tie = decide(candidate(candidate_sum=10_000_000), CHAMPION, MIN)
    assert not tie.promote and "a tie keeps the incumbent" in tie.reason
    assert decide(candidate(candidate_sum=10_000_001), CHAMPION, MIN).promote
    assert not decide(candidate(candidate_sum=9_999_999), CHAMPION, MIN).promote


def test_a_candidate_measured_against_another_version_waits_for_the_next_run():
    """After a rollback to v1 (or another run's promotion), a candidate measured against v2 is not promoted."""
    decision = decide(candidate(baseline_version=2), Champion(1, "2026-11-10"), MIN)
    assert not decision.promote and decision.reason.endswith("but v1 serves now; the next run measures against it")
    assert not decide(candidate(baseline_version=0), CHAMPION, MIN).promote


def test_an_older_window_never_replaces_a_newer_champion():
    decision = decide(candidate(window_end="2026-11-18"), CHAMPION, MIN)
    assert not decision.promote and "before the champion's (2026-11-19)" in decision.reason
    assert decide(candidate(window_end="2026-11-19"), CHAMPION, MIN).promote


def test_a_rolled_back_version_stays_out_even_if_the_alias_still_points_at_it():
    assert not decide(candidate(rolled_back_at="2026-11-21T00:00:00+00:00"), CHAMPION, MIN).promote
    assert not decide(candidate(version=2, rolled_back_at="2026-11-21T00:00:00+00:00"), CHAMPION, MIN).promote


def test_the_champion_itself_is_confirmed_on_a_rerun():
    assert decide(candidate(version=2, baseline_version=0), CHAMPION, MIN).promote


@given(b=st.integers(0, 10**9), c=st.integers(0, 10**9), n=st.integers(0, 200), m=st.integers(1, 100),
       base=st.integers(0, 5), serving=st.none() | st.integers(1, 5))
def test_promotion_implies_every_rule(b, c, n, m, base, serving):
    champion = Champion(serving, "2026-11-19") if serving else None
    decision = decide(candidate(version=9, baseline_version=base, baseline_sum=b, candidate_sum=c, n=n), champion, m)
    assert decision.promote == (n >= m and c > b and base == (serving or 0))


def test_a_program_may_require_a_significant_gain():
    """4 -> 6 correct of 35 was promoted, its bootstrap lower bound -33%: by default a gain is the point
    estimate's, and a program that wants more says so (promotion.require_significance)."""
    from teleprompt_assets.register.promotion import Candidate, decide

    weak = Candidate(version=2, baseline_version=0, baseline_sum=4_000_000, candidate_sum=6_000_000, n=35, window_end="2026-12-06", ci_low_ppm=-333_333)
    assert decide(weak, None, 20).promote
    refused = decide(weak, None, 20, require_significance=True)
    assert not refused.promote and refused.reason.endswith("but not significant (95% CI low -333333 ppm; promotion.require_significance)")
    strong = Candidate(version=2, baseline_version=0, baseline_sum=4_000_000, candidate_sum=16_000_000, n=35, window_end="2026-12-06", ci_low_ppm=1)
    assert decide(strong, None, 20, require_significance=True).promote
    unknown = Candidate(version=2, baseline_version=0, baseline_sum=4_000_000, candidate_sum=16_000_000, n=35, window_end="2026-12-06")
    assert not decide(unknown, None, 20, require_significance=True).promote
