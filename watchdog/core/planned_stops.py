"""Stops someone asked for: an operator restart (the program starts again at once), shutdown and reload (it
stays stopped).

Why a part of its own: a planned stop has state the rest of the watcher only
reads — whether the watchdog is shutting down, what the stop is for (`After`,
read when the child exits), its cause, and the operator waiting for the new
pid. It reaches the watcher only through `Stoppable`.
"""
from __future__ import annotations

import asyncio
from typing import Protocol

from loguru import logger

from watchdog.core.restart_policy import After
from watchdog.shared import clock
from watchdog.core.restarts import Restarts
from watchdog.core.standby import WarmStandby
from watchdog.core.states import State
from watchdog.core.throttle import Launcher


class Stoppable(Protocol):
    """What planned stops need of the watcher."""

    @property
    def pid(self) -> int | None: ...

    @property
    def state(self) -> State: ...

    def stop_child(self, grace: float, after: After) -> asyncio.Task | None:
        """Stop the running child with the program's stop signal (None: no child runs)."""
        ...

    async def start(self) -> None: ...

    def begin_recovery(self, kind: str, cause: str, pid: int | None) -> None: ...

    def stay_stopped(self) -> None:
        """A program with no child (backing off, exited, failed) is now stopped."""
        ...


class PlannedStops:
    def __init__(self, name: str, watcher: Stoppable, restart_history: Restarts, standby: WarmStandby | None,
                 launcher: Launcher, term_grace: float, stop_timeout: float) -> None:
        self.name = name
        self.watcher = watcher
        self.restart_history = restart_history
        self.standby = standby
        self.launcher = launcher
        self.term_grace = term_grace
        self.stop_timeout = stop_timeout  # the program's, or the watchdog's default
        self.shutting_down = False
        self.after = After.RECOVER  # what the exit of the child being stopped leads to
        self.cause = "shutdown"  # of a stop that leaves the program stopped
        self.began = 0.0  # wall-clock time the stop signal went out: the stop record's time
        self._spawn_waiters: list[asyncio.Future] = []

    def stopping(self, after: After) -> None:
        """The watcher is stopping the child (asked for, or after a failed check)."""
        self.after = after
        self.began = clock.now_s()

    async def restart(self, cause: str = "operator restart") -> dict:
        """Stop the child (its stop signal, term_grace, SIGKILL) and start it again at once."""
        if self.shutting_down:
            raise RuntimeError(f"{self.name}: the watchdog is shutting down")
        old_pid = self.watcher.pid
        spawned = asyncio.get_running_loop().create_future()
        self._spawn_waiters.append(spawned)
        self.restart_history.clear()
        self.watcher.begin_recovery("operator", cause, old_pid)
        if self.standby is not None:
            await self.standby.drop_if_stale()  # before the child frees the session for it
        stopping = self.watcher.stop_child(self.term_grace, After.RESTART_NOW)
        if stopping is not None:
            logger.info("{}: {}", self.name, cause)
            await stopping
        else:
            await self.watcher.start()
        new_pid = await asyncio.wait_for(spawned, self.term_grace + 10)
        return {"name": self.name, "old_pid": old_pid, "pid": new_pid, "state": str(self.watcher.state)}

    def spawned(self, pid: int | None) -> None:
        """Tell operator restarts waiting for the new process its pid (None: it could not be started)."""
        for waiter in self._spawn_waiters:
            if not waiter.done():
                waiter.set_result(pid)
        self._spawn_waiters.clear()

    def begin_shutdown(self) -> None:
        """From now on an exit ends the program, never restarts it."""
        self.shutting_down = True
        self.restart_history.cancel_backoff()
        self.launcher.forget(self.name)
        if self.standby is not None:
            self.standby.stop(self.stop_timeout)  # first: once the child ends it would take over

    async def stop(self, cause: str = "shutdown") -> None:
        """Shutdown or reload: stop signal, SIGKILL after stop_timeout; the program stays stopped."""
        self.cause = cause
        self.begin_shutdown()
        if self.standby is not None and self.standby.process is not None:
            await self.standby.process.stop(self.stop_timeout)  # already signalled: gone before the child goes
        stopping = self.watcher.stop_child(self.stop_timeout, After.STAY_STOPPED)
        if stopping is not None:
            await stopping
        else:
            self.watcher.stay_stopped()
