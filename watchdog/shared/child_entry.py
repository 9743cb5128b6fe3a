"""The start and end every wa-watchdog child shares: signals, READY=1, heartbeat, STOPPING=1.

A bridge, a monitor process, the drops-api and the simulator all live the same
way under a supervisor (our watchdog or systemd): SIGTERM or SIGINT asks them
to stop (an event, so they finish their work and exit 0), READY=1 goes out
once, when the caller says it is up, WATCHDOG=1 and STATUS= come from the
event loop (so a process stuck in a query or a busy loop stops beating and is
restarted), and STOPPING=1 goes out on the way out. What differs is passed in:
the status line, work done on each beat (the bridge's store probe), a period
cap, and an event that publishes a changed status at once.

Only asyncio and the notifier are imported: every child pays this on every restart.
"""
from __future__ import annotations

import asyncio
import math
import signal
from collections.abc import Callable
from types import TracebackType

from loguru import logger

from watchdog.shared.notify import Notifier, heartbeat_interval
from watchdog.shared.waiting import wait_event

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ChildEntry:
    """One child's sd_notify life: `async with entry:` installs the stop signals and, on the way out, sends
    STOPPING=1 (unless `stopping()` already did), stops the heartbeat and removes the signal handlers.

    `status` is the STATUS= line (sent with READY=1, then when it changes); `tick` runs on every beat before
    WATCHDOG=1; `max_period` caps the beat's period; with `status_changed`, a set event publishes the status
    at once, but no more often than `status_gap` seconds; `on_stop` runs after `stop` is set by a signal or
    `request_stop()` (e.g. to wake waits that do not watch `stop`).
    """

    def __init__(self, watchdog_sec: float, status: Callable[[], str], *, tick: Callable[[], None] | None = None,
                 max_period: float = math.inf, status_changed: asyncio.Event | None = None, status_gap: float = 0.0,
                 on_stop: Callable[[], None] | None = None) -> None:
        self._notifier = Notifier()
        self.stop = asyncio.Event()
        self.period = min(heartbeat_interval(watchdog_sec), max_period)
        self._status = status
        self._tick = tick
        self._status_changed = status_changed
        self._status_gap = status_gap
        self._on_stop = on_stop
        self._ready_sent = False
        self._stopping_sent = False
        self._beat: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ChildEntry:
        loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, self.request_stop)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        self.stopping()
        await self.stop_heartbeat()
        loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)

    def request_stop(self) -> None:
        """What SIGTERM and SIGINT do; the caller's own reasons to stop (a corrupt store) use it too."""
        self.stop.set()
        if self._on_stop is not None:
            self._on_stop()

    def start_heartbeat(self) -> None:
        """Beat from the event loop from now on (before READY=1 too: a bridge waiting for WhatsApp is alive)."""
        if self._beat is None:
            self._beat = asyncio.create_task(self._heartbeat())
            self._beat.add_done_callback(_report)

    async def stop_heartbeat(self) -> None:
        """Stop beating, e.g. before closing what `tick` touches."""
        if self._beat is not None:
            self._beat.cancel()
            await asyncio.gather(self._beat, return_exceptions=True)
            self._beat = None

    def ready(self) -> None:
        """READY=1 with the status line, once; later calls do nothing."""
        if not self._ready_sent:
            self._ready_sent = True
            self._notifier.ready(self._status())

    def publish_status(self) -> None:
        """STATUS= now if it changed (between beats: a state change the supervisor should see at once)."""
        self._notifier.status(self._status())

    def stopping(self) -> None:
        """STOPPING=1, once: at the start of the caller's shutdown (the heartbeat goes on while it drains)."""
        if not self._stopping_sent:
            self._stopping_sent = True
            self._notifier.stopping()

    async def _heartbeat(self) -> None:
        while True:
            if self._tick is not None:
                self._tick()
            self._notifier.heartbeat()
            self.publish_status()
            if self._status_changed is None:
                await asyncio.sleep(self.period)
                continue
            self._status_changed.clear()
            await asyncio.sleep(min(self._status_gap, self.period))  # a change is published at once, but not
            await wait_event(self._status_changed, max(0.0, self.period - self._status_gap))  # more often


def _report(task: asyncio.Task[None]) -> None:
    """A heartbeat that died is logged: the supervisor will restart the process for the silence that follows."""
    if not task.cancelled() and task.exception() is not None:
        logger.opt(exception=task.exception()).error("heartbeat failed")
