"""The watchdog's watch over its own event loop: time it did not watch is never held against a child.

A watchdog paused with SIGSTOP, in a frozen VM or starved of CPU keeps its
deadlines on the monotonic clock, which goes on running (CLOCK_MONOTONIC stops
only in a suspend, and then the children stop too). On waking, every heartbeat
deadline has passed and every probe timed out: judged by that time, every child
would look hung. So a tick notes that the loop runs; a judgement first asks
`resumed()`, which notices the gap ("my own loop did not run for X s"), records
it once, and has every subscriber re-arm its deadlines before anyone judges.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from loguru import logger

from watchdog.shared.recovery_log import RecoveryLog

TICK = 1.0  # seconds between the loop's own ticks
REARM = 0.25  # seconds beyond a tick unwatched that re-arm the deadlines (silently: a loaded host is this late)
GAP = 2.0  # seconds beyond a tick unwatched that are a gap worth a record (a pause, a frozen VM)


class LoopGaps:
    """Notices gaps in the watchdog's own loop; `count` goes up by one for each re-arm.

    Any unwatched time past REARM re-arms: a child's heartbeat deadline is short (watchdog_sec 3 beats every
    1.5 s), and its beats sent while the loop did not run may have been dropped (the notify socket queues 10
    datagrams), so even a 2 s pause must not count against it. Only a pause past GAP is recorded.
    """

    def __init__(self, recovery_log: RecoveryLog | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.recovery_log = recovery_log
        self.clock = clock
        self.count = 0
        self._last = clock()
        self._ticking = False  # without the tick (a watcher on its own, in tests) a quiet loop is no gap
        self._subscribers: list[Callable[[float], None]] = []

    def subscribe(self, rearm: Callable[[float], None]) -> Callable[[], None]:
        """Call `rearm(gap_seconds)` after each gap; returns the unsubscribe function."""
        self._subscribers.append(rearm)
        return lambda: self._subscribers.remove(rearm)

    async def tick(self) -> None:
        """Run for as long as the watchdog supervises."""
        self._ticking = True
        self._last = self.clock()
        try:
            while True:
                await asyncio.sleep(TICK)
                self.resumed()
        finally:
            self._ticking = False

    def resumed(self) -> bool:
        """True if the loop has just come back from a gap: it is recorded and every subscriber re-armed."""
        now = self.clock()
        unwatched = now - self._last - TICK
        self._last = now
        if not self._ticking or unwatched <= REARM:
            return False
        self.count += 1
        gap = unwatched + TICK
        if unwatched > GAP:
            message = (f"the watchdog's own loop did not run for {gap:.1f} s (paused, frozen or starved): "
                       "heartbeat deadlines and probe failure counts re-armed, no child judged by that time")
            logger.warning("{}", message)
            if self.recovery_log is not None:
                self.recovery_log.append("watchdog", "loop_gap", gap_s=round(gap, 3), message=message)
        for rearm in list(self._subscribers):
            rearm(gap)
        return True
