"""A watcher's planned stops: operator restart, shutdown and reload.

A part of `Watcher` (watchdog/watcher.py), split out by job; it works on the watcher's own state.
"""
from __future__ import annotations

import asyncio

from loguru import logger

from watchdog.states import State
from watchdog.watcher_exits import RESTART_NOW, STAY_STOPPED


class WatcherControl:
    """Stops someone asked for: the program restarts at once (operator) or stays stopped (shutdown, reload)."""

    async def restart(self, cause: str = "operator restart") -> dict:
        """Stop the child (its stop signal, term_grace, SIGKILL) and start it again at once."""
        if self.shutting_down:
            raise RuntimeError(f"{self.name}: the watchdog is shutting down")
        old_pid = self.pid
        spawned = asyncio.get_running_loop().create_future()
        self._spawn_waiters.append(spawned)
        self._failures.clear()
        self._begin_recovery("operator", cause, old_pid)
        self.recovery.delay = 0.0
        if self.standby is not None:
            await self.standby.drop_if_stale()  # before the child frees the session for it
        child = self.child
        if child is not None and child.running:
            logger.info("{}: {}", self.name, cause)
            await self._stop_child(child, self.ctx.settings.term_grace, RESTART_NOW)
        else:
            self._cancel_timer("backoff")
            await self.start()
        new_pid = await asyncio.wait_for(spawned, self.ctx.settings.term_grace + 10)
        return {"name": self.name, "old_pid": old_pid, "pid": new_pid, "state": str(self.state)}

    def begin_shutdown(self) -> None:
        """From now on an exit ends the program, never restarts it."""
        self.shutting_down = True
        self._cancel_timer("backoff")
        self.launcher.forget(self.name)
        if self.standby is not None:
            self.standby.stop(self._stop_timeout())  # first: once the child ends it would take over

    def _stop_timeout(self) -> float:
        return self.program.stop_timeout or self.ctx.settings.stop_timeout

    async def stop(self, cause: str = "shutdown") -> None:
        """Shutdown or reload: stop signal, SIGKILL after stop_timeout; the program stays stopped."""
        self._stop_cause = cause
        self.begin_shutdown()
        timeout = self._stop_timeout()
        if self.standby is not None and self.standby.process is not None:
            await self.standby.process.stop(timeout)  # already signalled: gone before the child goes
        child = self.child
        if child is not None and child.running:
            await self._stop_child(child, timeout, STAY_STOPPED)
        elif self.state in (State.BACKOFF, State.EXITED, State.FAILED):
            self._set_state(State.STOPPED)
        for task in list(self._tasks):
            task.cancel()
