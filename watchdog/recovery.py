"""Recovery records of one program: the recovery in progress, and records written after the event is handled.

A restart never waits for the disk: the exit is detected, the new process
spawned, and only then are the exit and restart records written (fsynced), in
that order.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from loguru import logger

from watchdog.recovery_log import RecoveryLog


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
