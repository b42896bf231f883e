"""The shared rate limiter: the bucket arithmetic (property-tested) and the store-backed buckets."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from teleprompt_assets.core.lm_store import LMStore
from teleprompt_assets.core.rate_limit import RateLimiter, reserve


def test_a_fresh_bucket_lets_one_minutes_allowance_through_then_spaces_calls_evenly():
    level, updated, waits = 60.0, 0.0, []
    for _ in range(62):
        level, wait = reserve(level, updated, 100.0, 60, 1)
        updated = 100.0
        waits.append(wait)
    assert waits[:60] == [0.0] * 60
    assert waits[60:] == [1.0, 2.0]


@settings(max_examples=200, deadline=None)
@given(per_minute=st.integers(1, 600), arrivals=st.lists(st.floats(0, 300, allow_nan=False), min_size=1, max_size=200))
def test_no_window_admits_more_than_the_limit_allows(per_minute, arrivals):
    """Callers start when told to; in any window of T seconds at most per_minute + T * rate start."""
    level, updated, starts = float(per_minute), 0.0, []
    for now in sorted(arrivals):
        level, wait = reserve(level, updated, now, per_minute, 1)
        updated = now
        starts.append(now + wait)
    rate = per_minute / 60
    starts.sort()
    for i, first in enumerate(starts):
        for j in range(i, len(starts)):
            assert j - i + 1 <= per_minute + (starts[j] - first) * rate + 1e-6


def test_two_processes_share_one_bucket(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    a = RateLimiter(LMStore(url), "openai/m@http://x", requests_per_minute=2, tokens_per_minute=None)
    b = RateLimiter(LMStore(url), "openai/m@http://x", requests_per_minute=2, tokens_per_minute=None)
    assert a.acquire(0, now=10.0) == 0.0
    assert b.acquire(0, now=10.0) == 0.0
    assert a.acquire(0, now=10.0) == 30.0  # the third call of the minute waits for the refill


def test_tokens_are_reserved_at_an_estimate_and_settled(tmp_path):
    limiter = RateLimiter(LMStore(f"sqlite:///{tmp_path / 's.sqlite'}"), "m", requests_per_minute=None, tokens_per_minute=1_000)
    assert limiter.acquire(900, now=5.0) == 0.0
    assert limiter.acquire(900, now=5.0) > 0  # the estimate does not fit twice
    limiter.settle_tokens(reserved=900, used=100)
    limiter.settle_tokens(reserved=900, used=100)
    assert limiter.acquire(700, now=5.0) == 0.0  # both calls used 100: 800 came back each
