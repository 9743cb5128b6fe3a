"""The watchdog's watch over itself: its own event loop (a gap) and the host's wall clock (a step), on one timer.

A gap: a watchdog paused with SIGSTOP, in a frozen VM or starved of CPU keeps
its deadlines on the monotonic clock, which goes on running (CLOCK_MONOTONIC
stops only in a suspend, and then the children stop too). On waking, every
heartbeat deadline has passed and every probe timed out: judged by that time,
every child would look hung. So a tick notes that the loop runs; a judgement
first asks `resumed()`, which notices the gap ("my own loop did not run for X
s"), records it once (`loop_gap`), and has every subscriber re-arm its
deadlines before anyone judges.

A step: NTP stepping the time, or a VM restored from a snapshot, moves every
wall-clock time the system writes after it. The same tick looks at the clock
seam's step detector and records each step once (`clock_step`, its size in
`step_s`), so times on either side of the record can be read right. Nothing
supervised depends on it: deadlines are monotonic, and the stores that compare
times across a step keep them on the boot's clock (`watchdog.shared.clock`).
The bridge and the drops-api notice the same step for their own needs and only
log it: one step, one record.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from loguru import logger

from watchdog.shared import clock
from watchdog.shared.recovery_log import RecoveryLog

TICK = 1.0  # seconds between the loop's own ticks (a clock step is recorded within about this)
REARM = 0.25  # seconds beyond a tick unwatched that re-arm the deadlines (silently: a loaded host is this late)
GAP = 2.0  # seconds beyond a tick unwatched that are a gap worth a record (a pause, a frozen VM)


class SelfWatch:
    """Notices gaps in the watchdog's own loop (`count` goes up by one for each re-arm) and steps of the clock.

    Any unwatched time past REARM re-arms: a child's heartbeat deadline is short (watchdog_sec 3 beats every
    1.5 s), and its beats sent while the loop did not run may have been dropped (the notify socket queues 10
    datagrams), so even a 2 s pause must not count against it. Only a pause past GAP is recorded.
    """

    def __init__(self, recovery_log: RecoveryLog | None = None, monotonic: Callable[[], float] = time.monotonic,
                 period: float = TICK) -> None:
        self.recovery_log = recovery_log
        self.monotonic = monotonic
        self.period = period
        self.count = 0
        self._last = monotonic()
        self._ticking = False  # without the tick (a watcher on its own, in tests) a quiet loop is no gap
        self._subscribers: list[Callable[[float], None]] = []

    def subscribe(self, rearm: Callable[[float], None]) -> Callable[[], None]:
        """Call `rearm(gap_seconds)` after each gap; returns the unsubscribe function."""
        self._subscribers.append(rearm)
        return lambda: self._subscribers.remove(rearm)

    async def tick(self) -> None:
        """Run for as long as the watchdog supervises: every `period`, a look for a gap and for a clock step."""
        self._ticking = True
        self._last = self.monotonic()
        steps = clock.StepDetector()
        try:
            while True:
                await asyncio.sleep(self.period)
                self.resumed()
                if (step := steps.check()) is not None:
                    self._record_step(step)
        finally:
            self._ticking = False

    def resumed(self) -> bool:
        """True if the loop has just come back from a gap: it is recorded and every subscriber re-armed."""
        now = self.monotonic()
        unwatched = now - self._last - self.period
        self._last = now
        if not self._ticking or unwatched <= REARM:
            return False
        self.count += 1
        gap = unwatched + self.period
        if unwatched > GAP:
            message = (f"the watchdog's own loop did not run for {gap:.1f} s (paused, frozen or starved): "
                       "heartbeat deadlines and probe failure counts re-armed, no child judged by that time")
            logger.warning("{}", message)
            if self.recovery_log is not None:
                self.recovery_log.append("watchdog", "loop_gap", gap_s=round(gap, 3), message=message)
        for rearm in list(self._subscribers):
            rearm(gap)
        return True

    def _record_step(self, step: float) -> None:
        text = clock.describe_step(step)
        logger.warning("{}: recovery-log times before and after it differ by the step", text)
        if self.recovery_log is not None:
            self.recovery_log.append("watchdog", "clock_step", step_s=round(step, 3), message=text)
