"""The one log line format of every wa-watchdog process, and loguru set up to write it.

    2026-12-01 09:13:01.123 bridge:main/standby[4321] INFO    standby pid 4321: waiting for session ...

Date, local time with milliseconds, the writer's name (its component; a
bridge's warm standby writes as `bridge:main/standby` until it takes the
session over), its pid, level, message. A line carries its own name because
the standby shares the bridge's log file and because `wa-watchdog logs`
merges all files into one stream. Output a child prints without loguru
(a traceback, a Go library's panic) is stamped in the same format by the
watchdog when it copies the line (`stamp`), so every line in every log file
can be sorted by time.
"""
from __future__ import annotations

import functools
import re
import sys
import time
from collections.abc import Callable
from datetime import datetime

from loguru import _better_exceptions, logger

from watchdog.shared import clock

TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"  # cut to milliseconds
LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) (\S+)\[(\d+)\] ")


def _library_dirs_once() -> None:
    """loguru looks up the interpreter's library directories (dozens of sysconfig expansions, ~10 ms) in every
    `logger.add()`. They cannot change within a process, and every child forked from the template would pay
    them again on each start: computed once. (A private loguru name; left alone if a release renames it.)"""
    formatter = getattr(_better_exceptions, "ExceptionFormatter", None)
    lookup = getattr(formatter, "_get_lib_dirs", None)
    if formatter is not None and callable(lookup) and not hasattr(lookup, "cache_info"):
        formatter._get_lib_dirs = staticmethod(functools.cache(lookup))


_library_dirs_once()


def preload() -> None:
    """What the fork template computes once for its children (watchdog/template.py)."""
    _better_exceptions.ExceptionFormatter._get_lib_dirs()


# The writer's name comes from loguru's `extra`: a standby renames itself on the path of its takeover
# (between the session lock and its first health answer), and a rename adds no handler.
LOGURU_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} {extra[component]}[{process}] {level: <7} {message}"


def standby_log_name(component: str) -> str:
    """How a bridge's warm standby names itself while it waits, so it is never taken for the active bridge."""
    return f"{component}/standby"


def setup(name: str, level: str = "INFO", sink: Callable[[str], object] | None = None) -> None:
    """Log as `name` to stderr (or `sink`)."""
    logger.remove()
    rename(name)
    logger.add(sink or sys.stderr, level=level, format=LOGURU_FORMAT, backtrace=False, diagnose=False)


def rename(name: str) -> None:
    """Log as `name` from now on (a standby that took over writes as the component)."""
    logger.configure(extra={"component": name})


def stamp(name: str, pid: int, text: str, when: float | None = None) -> str:
    """A line without our format (raw child output) as a line with it, timed when the watchdog read it."""
    moment = datetime.fromtimestamp(clock.now_s() if when is None else when)
    return f"{moment.strftime(TIME_FORMAT)[:-3]} {name}[{pid}] {text}"


def is_stamped(line: str) -> bool:
    return LINE.match(line) is not None


def line_time(line: str) -> float | None:
    """Epoch seconds of a formatted line, None for anything else (e.g. a line from before this format)."""
    match = LINE.match(line)
    if not match:
        return None
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()


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
