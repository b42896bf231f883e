"""LM usage of a compile, and what it would cost on a real LM.

The offline LM answers in microseconds, so its wall time says nothing about production; the call
and token counts do. Projections multiply them by a configured per-call latency and token prices.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from collections.abc import Iterator

import dspy
from pydantic import BaseModel, ConfigDict, Field


class CostModel(BaseModel):
    """Defaults resemble a small hosted model (about 1 s a call, cents per million tokens)."""

    model_config = ConfigDict(extra="forbid")
    latency_s: float = Field(default=1.0, ge=0)
    usd_per_1m_input_tokens: float = Field(default=0.15, ge=0)
    usd_per_1m_output_tokens: float = Field(default=0.60, ge=0)
    parallel_calls: int = Field(default=1, ge=1, description="concurrent LM calls a real deployment would make")


@dataclass
class Usage:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    _start: int = field(default=0, repr=False)

    def projected_wall_s(self, cost: CostModel) -> float:
        return self.calls * cost.latency_s / cost.parallel_calls

    def projected_usd(self, cost: CostModel) -> float:
        return self.input_tokens * cost.usd_per_1m_input_tokens / 1e6 + self.output_tokens * cost.usd_per_1m_output_tokens / 1e6


@contextmanager
def metered(lm: dspy.LM) -> Iterator[Usage]:
    """Count the calls and tokens ``lm`` serves inside the block (history kept whole meanwhile)."""
    usage = Usage(_start=len(lm.history))
    with dspy.context(lm=lm, max_history_size=10**9):
        yield usage
    for entry in lm.history[usage._start :]:
        tokens = entry.get("usage") or {}
        usage.calls += 1
        usage.input_tokens += int(tokens.get("prompt_tokens") or 0)
        usage.output_tokens += int(tokens.get("completion_tokens") or 0)
