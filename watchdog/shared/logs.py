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

Logging never waits for a reader. A child's stderr is a pipe the watchdog
reads; a watchdog paused (SIGSTOP, a frozen VM) stops reading, the pipe fills,
and a blocking write would stop the child's event loop, and with it the data
path. `StderrSink` writes what the descriptor takes now and counts the rest,
saying how much was dropped once it can write again: a lost line under a
paused supervisor is acceptable, a stalled bridge is not.
"""
from __future__ import annotations

import functools
import os
import re
import select
import stat
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TextIO

from loguru import _better_exceptions, logger

from watchdog.shared import clock

TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"  # cut to milliseconds
LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) (\S+)\[(\d+)\] ")
ATOMIC_WRITE = 4096  # PIPE_BUF: a writable pipe takes this much without blocking


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
    """What the fork template computes once for its children (watchdog/core/template.py)."""
    _better_exceptions.ExceptionFormatter._get_lib_dirs()


# The writer's name comes from loguru's `extra`: a standby renames itself on the path of its takeover
# (between the session lock and its first health answer), and a rename adds no handler.
LOGURU_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} {extra[component]}[{process}] {level: <7} {message}"


def rotated(path: Path, keep: int) -> list[Path]:
    """A size-rotated file's copies, oldest first: `path.<keep>` ... `path.1`, then `path` itself."""
    return [path.with_name(f"{path.name}.{n}") for n in range(keep, 0, -1)] + [path]


def rotate(path: Path, keep: int) -> None:
    """Move `path` to `path.1`, each `path.<n>` to `path.<n+1>`; `path.<keep>` is overwritten (the oldest goes)."""
    for n in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{n + 1}"))
    os.replace(path, path.with_name(f"{path.name}.1"))


def standby_log_name(component: str) -> str:
    """How a bridge's warm standby names itself while it waits, so it is never taken for the active bridge."""
    return f"{component}/standby"


class StderrSink:
    """Non-blocking writer to a file descriptor (default: stderr) that drops rather than waits."""

    def __init__(self, fd: int = 2) -> None:
        self.fd = fd
        self.dropped_bytes = 0

    def write(self, data: bytes) -> None:
        if self.dropped_bytes and self._writable():
            notice = f"[wa-watchdog: {self.dropped_bytes} bytes of output dropped, stderr was full]\n".encode()
            self.dropped_bytes = 0
            self._write_some(notice)
        self.dropped_bytes += len(data) - self._write_some(data)

    def write_text(self, message: str) -> None:
        """A loguru sink: log lines go the same non-blocking way."""
        self.write(str(message).encode("utf-8", "replace"))

    def _writable(self) -> bool:
        try:
            return bool(select.select([], [self.fd], [], 0)[1])
        except (OSError, ValueError):
            return False

    def _write_some(self, data: bytes) -> int:
        written = 0
        while written < len(data) and self._writable():
            try:
                written += os.write(self.fd, data[written:written + ATOMIC_WRITE])
            except BlockingIOError:
                break
            except OSError:
                return len(data)  # stderr is gone (closed terminal): nothing to wait for
        return written


def stderr_sink() -> Callable[[str], object] | TextIO:
    """Where a process's log lines go: a `StderrSink` when stderr is a pipe (a child of the watchdog reads
    it), else sys.stderr as it is (a terminal, a file, a test's capture)."""
    try:
        is_pipe = stat.S_ISFIFO(os.fstat(sys.stderr.fileno()).st_mode)
    except (AttributeError, OSError, ValueError):
        return sys.stderr
    return StderrSink(sys.stderr.fileno()).write_text if is_pipe else sys.stderr


def setup(name: str, level: str = "INFO", sink: Callable[[str], object] | TextIO | None = None) -> None:
    """Log as `name` to stderr (or `sink`), never blocking on a full pipe (`stderr_sink`)."""
    logger.remove()
    rename(name)
    logger.add(sink or stderr_sink(), level=level, format=LOGURU_FORMAT, backtrace=False, diagnose=False)


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
