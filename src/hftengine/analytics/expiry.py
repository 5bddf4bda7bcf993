"""Time to expiry in years (ACT/365) to the exchange's expiry instant."""

from __future__ import annotations

from datetime import date, datetime, time
from zoneinfo import ZoneInfo

SECONDS_PER_DAY = 86_400.0


def time_to_expiry(
    now: datetime,
    expiry: date,
    expiry_time: time = time(15, 30),
    tz: str = "Asia/Kolkata",
    *,
    day_count: float = 365.0,
) -> float:
    """Years from ``now`` to ``expiry`` at ``expiry_time`` in ``tz``: ``seconds / (day_count · 86400)``.

    ``now`` must be timezone-aware (exchange timestamps always are); a naive datetime
    is a programming error and raises ``ValueError``. The result is negative after
    the expiry instant (callers flag that as ``expired``).
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    expiry_at = datetime.combine(expiry, expiry_time, tzinfo=ZoneInfo(tz))
    return (expiry_at - now).total_seconds() / (day_count * SECONDS_PER_DAY)
