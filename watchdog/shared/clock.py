"""The one wall clock of every process: the time of day is read here and nowhere else.

Stores stamp rows with it, retries and windows compare against it, logs and the console show it. Reading it in
one place is what lets a test fix the time of day for all of them at once (``set_for_tests``), so no test
depends on the date it runs on. Durations and deadlines are not times of day: they use ``time.monotonic()``.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone

_fixed_s: float | None = None


def now_s() -> float:
    """Seconds since the epoch (``time.time()`` unless a test fixed the clock)."""
    return time.time() if _fixed_s is None else _fixed_s


def now() -> datetime:
    """The current time of day, timezone-aware UTC."""
    return datetime.fromtimestamp(now_s(), timezone.utc)


def local_now() -> datetime:
    """The current time of day in the host's timezone, for what people read (the console's header, today)."""
    return now().astimezone()


def set_for_tests(when: datetime | float | None) -> None:
    """Fix the clock at `when` (an aware datetime or epoch seconds) until set again; None lets it run."""
    global _fixed_s
    _fixed_s = when.timestamp() if isinstance(when, datetime) else when
