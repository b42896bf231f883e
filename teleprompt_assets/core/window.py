"""The training window: the ``days`` days a partition learns from, ending with its own day.

One value for what tags, metadata, registry lookups and automation all say about a window, so its
label (``first..last``, the registry's ``window`` tag) is written and read in one place
(docs/architecture.md#flow).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

SEPARATOR = ".."


@dataclass(frozen=True, order=True)
class Window:
    last: date
    days: int

    def __post_init__(self) -> None:
        if isinstance(self.days, bool) or not isinstance(self.days, int) or self.days < 1:
            raise ValueError(f"a window holds at least one day, got {self.days!r}")
        if not isinstance(self.last, date):
            raise TypeError(f"a window ends on a date, got {self.last!r}")

    @classmethod
    def ending(cls, day: str | date, days: int) -> Window:
        """The window of ``days`` days whose last day is ``day`` (a date or ``YYYY-MM-DD``)."""
        return cls(date.fromisoformat(day) if isinstance(day, str) else day, days)

    @classmethod
    def parse(cls, label: str) -> Window:
        """The window a ``first..last`` label names; ValueError for anything else."""
        first, sep, last = label.partition(SEPARATOR)
        if not sep:
            raise ValueError(f"not a window label (first{SEPARATOR}last): {label!r}")
        start, end = date.fromisoformat(first), date.fromisoformat(last)
        if end < start:
            raise ValueError(f"a window cannot end before it starts: {label!r}")
        return cls(end, (end - start).days + 1)

    @property
    def first(self) -> date:
        return self.last - timedelta(days=self.days - 1)

    @property
    def label(self) -> str:
        return f"{self.first.isoformat()}{SEPARATOR}{self.last.isoformat()}"

    def dates(self) -> list[str]:
        """Its days as ``YYYY-MM-DD``, oldest first."""
        return [(self.first + timedelta(days=i)).isoformat() for i in range(self.days)]

    def __contains__(self, day: object) -> bool:
        when = date.fromisoformat(day) if isinstance(day, str) else day
        return isinstance(when, date) and self.first <= when <= self.last

    def __str__(self) -> str:
        return self.label


def window_end(label: str | None) -> str | None:
    """The last day of a stored ``window`` tag, or None when there is none or it is not a label."""
    if not label:
        return None
    try:
        return Window.parse(label).last.isoformat()
    except ValueError:
        return None
