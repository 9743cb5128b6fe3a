"""Logging for every wa-watchdog process: loguru to stderr, one line per event.

Under the watchdog a child's stderr is prefixed with its component name and
copied to its log file; under systemd it lands in journald. So the line itself
carries only time, level and message.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable

from loguru import logger


def setup(level: str = "INFO") -> None:
    logger.remove()
    logger.add(sys.stderr, level=level, format="{time:HH:mm:ss.SSS} {level: <7} {message}", backtrace=False,
               diagnose=False)


class RateLimitedLog:
    """Logs the first event of each key at once, then at most once per interval with a count of those in between.

    For whatever a client or a bug can repeat thousands of times a second (refused requests, shed connections,
    the same failing request): the log must keep its history, not one line per occurrence.
    """

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._keys: dict[str, tuple[float, int]] = {}  # key -> (logged at, suppressed since)

    def report(self, key: str, text: str, exception: BaseException | None = None) -> bool:
        """Log `text` unless `key` was logged within the interval (then only count it); True when logged."""
        now = self.clock()
        logged_at, quiet = self._keys.get(key, (None, 0))
        if logged_at is not None and now - logged_at < self.interval:
            self._keys[key] = (logged_at, quiet + 1)
            return False
        more = f" ({quiet} more like this in the last {self.interval:.0f} s)" if quiet else ""
        logger.opt(exception=exception).warning("{}{}", text, more)
        if len(self._keys) > 1024:  # forget keys that have gone quiet
            self._keys = {k: v for k, v in self._keys.items() if now - v[0] < self.interval}
        self._keys[key] = (now, 0)
        return True
