"""The watchdog's own sd_notify towards systemd: READY=1, WATCHDOG=1, STATUS=, STOPPING=1.

WATCHDOG=1 is sent at half of WATCHDOG_USEC, but only after a supervision
cycle has run and found every watcher's checks on time. A watchdog whose event
loop is wedged (or frozen with SIGSTOP) stops pinging, and systemd kills and
restarts it. Without NOTIFY_SOCKET, everything here is silent.
"""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping

from loguru import logger

from watchdog.shared.notify import Notifier


def watchdog_interval(environ: Mapping[str, str] = os.environ) -> float | None:
    """Half of systemd's WATCHDOG_USEC in seconds, or None when systemd does not watch this process."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000


class SystemdHeartbeat:
    def __init__(self, notifier: Notifier | None = None, interval: float | None = None) -> None:
        self.notifier = notifier or Notifier()
        self.interval = interval if interval is not None else watchdog_interval()
        self._ready_sent = False
        self._status = ""

    def update(self, ready: bool, status: str) -> None:
        """READY=1 the first time the system is ready; STATUS= whenever the line changes."""
        if ready and not self._ready_sent:
            self._ready_sent = True
            self._status = status
            self.notifier.ready(status)
            logger.info("ready: {}", status)
        elif status != self._status:
            self._status = status
            self.notifier.status(status)

    async def run(self, cycle: Callable[[], str | None]) -> None:
        """Every interval: run a supervision cycle; WATCHDOG=1 only if it reports no problem."""
        if self.interval is None or not self.notifier.enabled:
            return
        while True:
            await asyncio.sleep(self.interval)
            problem = cycle()
            if problem is None:
                self.notifier.heartbeat()
            else:
                logger.error("supervision cycle found a problem, withholding WATCHDOG=1: {}", problem)

    def stopping(self) -> None:
        self.notifier.stopping()

    def reloading(self) -> None:
        """RELOADING=1 (with MONOTONIC_USEC, as systemd wants it): `systemctl reload` waits for READY=1."""
        self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def reloaded(self) -> None:
        if self._ready_sent:
            self.notifier.ready(self._status)
