"""Client-side rate limits (requests and tokens per minute), shared by every process of a deployment.

A provider's limit is per key, not per step: two programs compiled side by side, each with its own
thread pool, must stay under one requests-per-minute figure together. Each limit is a token bucket
kept in the LM state store (:mod:`.lm_store`) and updated in one transaction per call.

The bucket holds at most one minute's allowance and refills continuously. A caller *reserves* what
it needs and may drive the level below zero; it then waits until the refill has paid that debt.
Reserving never loops or polls, so a thousand threads cost a thousand short transactions. Tokens are unknown until the answer
arrives: they are reserved at an estimate and the difference is settled from the response's usage.
"""

from __future__ import annotations

from dataclasses import dataclass

from teleprompt_assets.core.lm_store import LMStore


def reserve(level: float, updated: float, now: float, per_minute: int, amount: float) -> tuple[float, float]:
    """The bucket after taking ``amount`` at ``now``, and how long the taker must wait (seconds).
    A new bucket is full (the store creates it so)."""
    rate = per_minute / 60.0
    refilled = min(float(per_minute), level + max(0.0, now - updated) * rate)
    left = refilled - amount
    return left, max(0.0, -left / rate)


def _later(updated: float, now: float) -> float:
    """A clock read before waiting for the row (or on a machine running behind) never moves a bucket back."""
    return max(updated, now)


@dataclass(frozen=True)
class RateLimiter:
    """The requests and tokens buckets of one LM (``name``: its model and endpoint)."""

    store: LMStore
    name: str
    requests_per_minute: int | None
    tokens_per_minute: int | None

    def acquire(self, tokens: int, now: float) -> float:
        """Reserve one request and ``tokens`` tokens; the seconds to wait before sending it."""
        wait = 0.0
        for suffix, per_minute, amount in (("requests", self.requests_per_minute, 1), ("tokens", self.tokens_per_minute, tokens)):
            if per_minute is None:
                continue

            def take(level: float, updated: float, per_minute=per_minute, amount=amount) -> tuple[float, float, float]:
                at = _later(updated, now)
                left, seconds = reserve(level, updated, at, per_minute, amount)
                return left, at, seconds + (at - now)

            wait = max(wait, self.store.update_bucket(f"{self.name}:{suffix}", float(per_minute), take))
        return wait

    def settle_tokens(self, reserved: int, used: int) -> None:
        """Give back (or take more of) the token reservation once the response says what was used."""
        if self.tokens_per_minute is None or reserved == used:
            return
        self.store.update_bucket(f"{self.name}:tokens", float(self.tokens_per_minute),
                                 lambda level, updated: (level + reserved - used, updated, None))
