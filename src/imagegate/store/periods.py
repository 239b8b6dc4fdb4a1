"""Credit-limit reset periods: UTC calendar days, ISO weeks (from Monday) and months."""

from __future__ import annotations

from datetime import datetime, timedelta

from imagegate.store.coltypes import as_utc

LIMIT_RESETS = ("daily", "weekly", "monthly")


def check_limit_reset(reset: str | None) -> str | None:
    if reset is not None and reset not in LIMIT_RESETS:
        raise ValueError(f"limit_reset must be one of {LIMIT_RESETS} or None, got {reset!r}")
    return reset


def period_start(reset: str | None, now: datetime) -> datetime | None:
    """Start of the period containing ``now`` (UTC); ``None`` when the limit never resets."""
    day = as_utc(now).replace(hour=0, minute=0, second=0, microsecond=0)
    if reset is None:
        return None
    if reset == "daily":
        return day
    if reset == "weekly":
        return day - timedelta(days=day.weekday())
    if reset == "monthly":
        return day.replace(day=1)
    raise ValueError(f"unknown limit_reset {reset!r}")
