"""What an outcome (a feedback value) is as a number, wherever outcomes are read: booleans 0/1,
finite numbers, and numeric or true/false strings; anything else is no outcome at all."""

from __future__ import annotations

import math
from typing import Any


def outcome_value(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "false"):
            return float(text == "true")
        try:
            number = float(text)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def probability(value: Any) -> float | None:
    """An outcome that can be a probability target: :func:`outcome_value` within [0, 1]."""
    number = outcome_value(value)
    return number if number is not None and 0 <= number <= 1 else None
