"""The wall clock, as one injectable function.

Whatever depends on the date or the time of day (sunset dates in the catalog, generation
timestamps) asks a ``Clock`` handed to it, so tests can pin the day they mean.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

#: Returns the current time, timezone-aware, in UTC.
Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


def fixed_clock(at: datetime) -> Clock:
    """A clock that always reads ``at`` (naive values are taken as UTC)."""
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return lambda: at
