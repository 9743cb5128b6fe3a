"""Recovery records of one program: the recovery in progress, its restart and healthy records, and records
written after the event is handled.

A restart never waits for the disk: the exit is detected, the new process
spawned, and only then are the exit and restart records written (fsynced), in
that order.
"""
from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from loguru import logger

from watchdog.shared.recovery_log import RecoveryLog

if TYPE_CHECKING:
    from watchdog.core.metrics import Metrics


@dataclass
class Recovery:
    """From a failure's detection to the program being healthy again."""

    detected_at: float | None = None  # monotonic; None = no recovery in progress
    cause: str = ""
    kind: str = ""  # exit | hang | unhealthy | rss_limit | operator | reload (a bounded metrics label)
    failed_pid: int | None = None
    delay: float = 0.0  # the restart delay chosen for it

    def begin(self, kind: str, cause: str, pid: int | None) -> None:
        self.detected_at = time.monotonic()
        self.cause, self.kind, self.failed_pid = cause, kind, pid
        self.delay = 0.0  # until the restart decision says otherwise

    @property
    def active(self) -> bool:
        return self.detected_at is not None

    def elapsed(self) -> float:
        return time.monotonic() - self.detected_at if self.detected_at is not None else 0.0

    def end(self) -> None:
        self.detected_at = None


class Records:
    """Queues one program's recovery records and writes them right after the current event loop callback."""

    def __init__(self, log: RecoveryLog, component: str) -> None:
        self.log = log
        self.component = component
        self._unwritten: list[tuple[str, dict]] = []

    def add(self, event: str, **fields: object) -> None:
        if not self._unwritten:
            asyncio.get_running_loop().call_soon(self.flush)
        self._unwritten.append((event, fields))

    def flush(self) -> None:
        records, self._unwritten = self._unwritten, []
        for event, fields in records:
            try:
                self.log.append(self.component, event, **fields)
            except OSError as exc:
                logger.error("{}: recovery log not written ({} {}): {}", self.component, event, fields, exc)


class Recoveries:
    """A program's recoveries: the one in progress (`current`), how many restarts were made and when, the last
    failure's cause; the restart and healthy records and metrics of each."""

    def __init__(self, name: str, records: Records, metrics: Metrics) -> None:
        self.name = name
        self.records = records
        self.metrics = metrics
        self.current = Recovery()
        self.count = 0  # restarts made
        self.times: collections.deque[float] = collections.deque(maxlen=1000)  # monotonic, for STATUS=
        self.last_cause = ""

    @property
    def in_progress(self) -> bool:
        return self.current.active

    def begin(self, kind: str, cause: str, pid: int | None) -> None:
        self.current.begin(kind, cause, pid)
        self.last_cause = cause

    def delayed(self, delay: float) -> None:
        """The restart of the recovery in progress waits `delay` (0: at once, or a standby took over)."""
        self.current.delay = delay

    def end(self) -> None:
        """Nothing to recover (it exited cleanly and stays stopped)."""
        self.current.end()

    def failed(self, cause: str) -> None:
        """Not restarting: no recovery is in progress any more."""
        self.last_cause = cause
        self.current.end()

    def restarted(self, pid: int, started_at: float, promoted: bool) -> None:
        """`pid` (started at `started_at`, monotonic) replaces the failed process, if a recovery is in progress."""
        recovery = self.current
        if not recovery.active:
            return
        self.count += 1
        self.times.append(time.monotonic())
        self.metrics.count_restart(self.name, recovery.kind)
        self.records.add("restart", pid=recovery.failed_pid, new_pid=pid, cause=recovery.cause,
                         delay_ms=round(recovery.delay * 1000, 1),
                         restart_ms=round((started_at - recovery.detected_at) * 1000, 1), standby=promoted or None)

    def healthy(self, pid: int | None) -> None:
        """The program is healthy: the recovery in progress, if any, is over."""
        recovery = self.current
        if not recovery.active:
            return
        downtime = recovery.elapsed()
        self.records.add("healthy", pid=pid, cause=recovery.cause, downtime_ms=round(downtime * 1000, 1))
        self.metrics.observe_recovery(self.name, downtime)
        logger.info("{} healthy again after {:.3f} s ({})", self.name, downtime, recovery.cause)
        recovery.end()
