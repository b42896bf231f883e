"""LM usage of a compile, and what it would cost on a real LM.

The offline LM answers in microseconds, so its wall time says nothing about production; the call
and token counts do. Projections multiply them by a configured per-call latency and token prices.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import dspy
from dspy.utils.callback import BaseCallback

from teleprompt_assets.core.config import CostModel


@dataclass
class Usage:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    reused: int = 0  # answers the gateway's cache gave at no cost
    retries: int = 0
    _start: int = field(default=0, repr=False)

    def projected_wall_s(self, cost: CostModel) -> float:
        return self.calls * cost.latency_s / cost.parallel_calls

    def projected_usd(self, cost: CostModel) -> float:
        return self.input_tokens * cost.usd_per_1m_input_tokens / 1e6 + self.output_tokens * cost.usd_per_1m_output_tokens / 1e6


class Progress(BaseCallback):
    """Reports LM calls while a block runs, at most once per ``every_s`` seconds.

    A compile against a real LM can run for an hour; without this the run log is silent until it
    ends. It rides on DSPy's callback hooks, so it sees every call any optimizer makes.
    """

    def __init__(self, report: Callable[[str], None], label: str, every_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.report, self.label, self.every_s, self.clock = report, label, every_s, clock
        self.calls = self.errors = 0
        self.started = self.last = clock()

    def on_lm_end(self, call_id: str, outputs: dict[str, Any] | None, exception: BaseException | None = None) -> None:
        self.calls += 1
        self.errors += exception is not None
        if self.clock() - self.last >= self.every_s:
            self.last = self.clock()
            self.report(self.summary())

    def summary(self) -> str:
        failed = f", {self.errors} failed" if self.errors else ""
        return f"{self.label}: {self.calls} LM calls{failed} in {self.clock() - self.started:.0f} s"


@contextmanager
def metered(lm: dspy.LM, progress: Progress | None = None) -> Iterator[Usage]:
    """Count the calls and tokens ``lm`` serves inside the block: from its gateway's counters when it
    has one (:mod:`.gateway`, the pipeline's case), else from its history (kept whole meanwhile)."""
    from teleprompt_assets.core.gateway import gateway_of

    gateway = gateway_of(lm)
    before = gateway.stats() if gateway is not None else None
    usage = Usage(_start=len(lm.history))
    callbacks = [*dspy.settings.callbacks, progress] if progress is not None else dspy.settings.callbacks
    with dspy.context(lm=lm, max_history_size=10 if gateway is not None else 10**9, callbacks=callbacks):
        yield usage
    if gateway is not None:
        spent = gateway.stats() - before
        usage.calls, usage.input_tokens, usage.output_tokens, usage.reused, usage.retries = (
            spent.calls, spent.input_tokens, spent.output_tokens, spent.reused, spent.retries)
        return
    for entry in lm.history[usage._start :]:
        tokens = entry.get("usage") or {}
        usage.calls += 1
        usage.input_tokens += int(tokens.get("prompt_tokens") or 0)
        usage.output_tokens += int(tokens.get("completion_tokens") or 0)
