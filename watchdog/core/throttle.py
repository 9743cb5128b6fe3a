"""Bounds on the whole watchdog: how many children start at once, how many restarts it makes per second.

A hundred monitors starting together (or restarting together after a shared
failure) would each pay a cold start on two cores and starve the rest into
missed heartbeats: load turned into a restart storm. Spawns beyond the bounds
wait in a queue, first come first served, and the wait is recorded. A spawn
within the bounds happens at once, in the caller's own call: the common
restart (one child died) never waits for a task hop.
"""
from __future__ import annotations

import asyncio
import collections
import os
import time
from collections.abc import Callable


class Launcher:
    def __init__(self, max_starting: int, restart_rate: float,
                 on_throttle: Callable[[str, str], None]) -> None:
        self.max_starting = max_starting or 2 * (os.cpu_count() or 1)
        self.restart_rate = restart_rate
        self.burst = max(1.0, restart_rate)
        self._tokens = self.burst
        self._refilled = time.monotonic()
        self._on_throttle = on_throttle
        self.starting: set[str] = set()
        self._queue: collections.OrderedDict[str, tuple[Callable[[], None], bool]] = collections.OrderedDict()
        self._timer: asyncio.TimerHandle | None = None

    def launch(self, name: str, spawn: Callable[[], None], restart: bool) -> bool:
        """Call `spawn()` now if the bounds allow (True), else once they do; a restart also needs a rate token."""
        self._queue.pop(name, None)
        why = self._blocked(restart)
        if why is None and not self._queue:
            self._take(name, restart)
            spawn()
            return True
        self._queue[name] = (spawn, restart)
        self._on_throttle(name, why or f"{len(self._queue) - 1} start(s) queued before it")
        self._drain()
        return False

    def done(self, name: str) -> None:
        """`name` is no longer starting (ready, exited or stopped): its slot goes to the next in the queue."""
        if name in self.starting:
            self.starting.discard(name)
            self._drain()

    def forget(self, name: str) -> None:
        """`name` will not start after all (stopped, removed, shutdown)."""
        self._queue.pop(name, None)
        self.done(name)

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._refilled) * self.restart_rate)
        self._refilled = now

    def _blocked(self, restart: bool) -> str | None:
        if len(self.starting) >= self.max_starting:
            return f"{len(self.starting)} children starting (max_starting {self.max_starting})"
        self._refill()
        if restart and self._tokens < 1:
            return f"restart_rate {self.restart_rate:g} per second reached"
        return None

    def _take(self, name: str, restart: bool) -> None:
        self.starting.add(name)
        if restart:
            self._tokens -= 1

    def _drain(self) -> None:
        while self._queue:
            name, (spawn, restart) = next(iter(self._queue.items()))
            if self._blocked(restart) is not None:
                if restart and len(self.starting) < self.max_starting and self._timer is None:
                    wait = (1 - self._tokens) / self.restart_rate
                    self._timer = asyncio.get_running_loop().call_later(wait, self._tick)
                return
            del self._queue[name]
            self._take(name, restart)
            spawn()

    def _tick(self) -> None:
        self._timer = None
        self._drain()

    def close(self) -> None:
        self._queue.clear()
        if self._timer is not None:
            self._timer.cancel()
