"""The recovery log: JSON lines under the data directory, one record per event.

Written by the watchdog (exit, hang, unhealthy, rss_limit, restart, healthy,
crash_loop, alert, loop_gap, clock_step), the bridge (disconnect, reconnect, backfill) and the
monitors (backfill: which drops a window recovered; reread: a cursor that did
not belong to the file it follows). Several processes append, so each append
takes a short flock on a side file, rotates by size under that lock, writes one
line with O_APPEND and fsyncs: a record that was logged survives a power cut,
and no two writers rotate at once.

The watchdog appends from its supervision loop, so the lock is waited for at
most `LOCK_WAIT` seconds: a process that holds it longer (nothing of ours does)
cannot freeze supervision; the record is then written without it (one O_APPEND
write is still whole) and rotation waits for the next append. The lock is 0600,
so no other local user can open it to hold it. A full disk or an I/O error
never raises: the record is returned unwritten and the failure logged once.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import select
import time
from collections.abc import Iterator
from pathlib import Path

from loguru import logger

from watchdog.shared import file_modes, logs
from watchdog.shared import clock

# The supervisor's own record kinds; a package adds its own with `register_events` from its slice
# (bridge/component.py, monitors/component.py), which every process imports with its config before it writes.
EVENTS = {"exit", "hang", "unhealthy", "rss_limit", "restart", "healthy", "crash_loop", "failed", "alert", "start",
          "stop",
          "overloaded", "throttle", "reload",  # a starved child given time; a delayed start; a config reload
          "loop_gap",  # the watchdog's own loop did not run for a while (paused): deadlines re-armed
          "clock_step"}  # the host's wall clock was stepped (NTP, a VM restored): times around it differ by it


def register_events(*names: str) -> None:
    """Record kinds a package writes (an unknown kind is refused at `append`: a typo never reaches the log)."""
    EVENTS.update(names)


LOCK_WAIT = 0.2  # seconds an append waits for the lock before writing without it
LOCK_POLL = 0.005


class RecoveryLog:
    def __init__(self, path: Path, max_bytes: int = 10 * 1024 * 1024, keep: int = 3) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self._failing = False  # the last append could not be written: log the next failure only once

    def append(self, component: str, event: str, at: float | None = None, **fields: object) -> dict:
        """Append one record; `fields` are cause, pid, new_pid, downtime_ms, message, ... (None is dropped).

        `at`: when it happened, if that was before now (a planned stop is dated when it began, before
        anything the process that replaces it writes); readers order records by time."""
        if event not in EVENTS:
            raise ValueError(f"unknown recovery event {event!r}")
        record = {"time": clock.now_s() if at is None else at, "component": component, "event": event,
                  **{k: v for k, v in fields.items() if v is not None}}
        line = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        try:
            self._write(line)
        except OSError as exc:  # ENOSPC, EIO, a read-only file system: the caller goes on regardless
            if not self._failing:
                logger.error("recovery log {} not written ({}): {}", self.path, event, exc.strerror or exc)
            self._failing = True
            return record
        if self._failing:
            logger.info("recovery log {} written again", self.path)
            self._failing = False
        return record

    def _write(self, line: bytes) -> None:
        file_modes.ensure_dir(self.path.parent)
        lock = file_modes.open_private(self.path.with_name(self.path.name + ".lock"))
        try:
            if self._lock(lock):
                self._rotate_if_full(len(line))
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, file_modes.DATA_FILE)
            try:
                size = os.fstat(fd).st_size
                if os.write(fd, line) < len(line):  # the disk filled up mid-line: leave no torn line behind
                    os.ftruncate(fd, size)
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                os.fsync(fd)
            finally:
                os.close(fd)
        finally:
            os.close(lock)  # releases the flock

    def _lock(self, fd: int) -> bool:
        """Take the lock within LOCK_WAIT; False (and a warning) if someone holds it longer."""
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    logger.warning("recovery log lock {}.lock held by another process for over {:g} s: "
                                   "appending without it", self.path, LOCK_WAIT)
                    return False
                select.select([], [], [], LOCK_POLL)  # not time.sleep: libfaketime (the clock chaos) fails it, EINVAL

    def _rotate_if_full(self, incoming: int) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size + incoming <= self.max_bytes:
            return
        logs.rotate(self.path, self.keep)

    def read(self, since: float = 0.0) -> Iterator[dict]:
        """Records newer than `since` (epoch seconds), oldest first, across rotated files."""
        for path in logs.rotated(self.path, self.keep):
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except FileNotFoundError:
                continue
            for line in lines:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn line from a crash mid-write; the rest is still readable
                if record.get("time", 0) >= since:
                    yield record
