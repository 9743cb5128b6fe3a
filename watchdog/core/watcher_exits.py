"""A watcher's stops, failures and exits: a failed check stops the child; its exit leads to a restart
(at once, by the standby, or after backoff), a stop, or FAILED.

A base of Watcher (watchdog/core/watcher.py), which owns the parts declared here and the starting side an
exit leads to (`_promote_standby`, `_start_soon`). What the exit leads to is decided by the pure
watchdog/core/restart_policy.exit_outcome; this module carries it out.
"""
from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from loguru import logger

from watchdog.core.child import ChildProcess, exit_cause
from watchdog.core.recovery import Records
from watchdog.core.restart_policy import After, Next, exit_outcome
from watchdog.core.states import Phase
from watchdog.core.timers import Tasks
from watchdog.core.watcher_view import WatcherView
from watchdog.shared import clock, exit_handoff
from watchdog.shared.programs import Program


# What the exit of a child stopped in each stopping phase leads to (watchdog/core/restart_policy.exit_outcome).
AFTER_STOP = {Phase.STOPPING_TO_RECOVER: After.RECOVER, Phase.STOPPING_TO_RESTART: After.RESTART_NOW,
              Phase.STOPPING_FOR_SHUTDOWN: After.STAY_STOPPED, Phase.STOPPING_FOR_RELOAD: After.STAY_STOPPED}


class WatcherExits(WatcherView):
    """Stopping the child, and what its exit (or a start that cannot be) leads to."""

    program: Program
    records: Records
    tasks: Tasks
    _stop_cause: str
    _stop_began: float
    # Watcher's: the phase's one setter, and the starting side an exit leads to.
    _set: Callable[[Phase], None]
    _promote_standby: Callable[[], bool]
    _start_soon: Callable[[], None]

    def unwell(self, event: str, cause: str) -> None:
        """A check failed (hang, unhealthy, rss_limit): SIGTERM, SIGKILL after term_grace, then restart."""
        child = self.child
        if child is None or not child.running or not self.phase.up:
            return
        logger.warning("{} {}: {}; stopping pid {}", self.name, event, cause, child.pid)
        self.recoveries.begin(event, cause, child.pid)
        self._stop_child(Phase.STOPPING_TO_RECOVER, self.ctx.settings.term_grace)
        self.records.add(event, cause=cause, pid=child.pid)
        self.alerts.fire("hang", f"{self.name} {event}: {cause}; restarting it")

    def _stop_child(self, why: Phase, grace: float) -> asyncio.Task | None:
        """Stop the running child (None: none runs); `why`, a stopping phase, says what its exit leads to.
        Planned stops use the program's stop_signal; a failed check's stop is SIGTERM (SIGCONT with both);
        SIGKILL after `grace`."""
        child = self.child
        if child is None or not child.running:
            return None
        self._stop_began = clock.now_s()
        self.checks.cancel()
        self.health.stopping()
        self.failures.interrupted()
        if not self.phase.stopping:
            self._stopped_while = self.phase
        if self.phase is not why:  # a later stop's purpose overtakes an earlier one's (TRANSITIONS says which)
            self._set(why)
        sig = signal.SIGTERM if why is Phase.STOPPING_TO_RECOVER else self.program.signal_number
        return self.tasks.run(child.stop(grace, sig))

    def on_exit(self, child: ChildProcess) -> None:
        """The pidfd fired: the child (or the standby) has ended (and is reaped)."""
        if self.standby is not None and child is self.standby.process:
            self.standby.ended(child)
            return
        if child is not self.child:
            return
        exit_handoff.record(self.ctx.data_dir, self.name, child.pid, child.exited_at)  # the next process dates its outage by it
        self.checks.cancel()
        self.failures.interrupted()
        code = child.returncode if child.returncode is not None else 0
        cause = exit_cause(code)
        stopping = self.phase.stopping
        after = AFTER_STOP[self.phase] if stopping else After.STAY_STOPPED if self._ending else None
        if self._ending and not stopping:  # it got the stop signal before we sent ours (control-group)
            self.records.add("stop", pid=child.pid, cause="shutdown", message=f"ended by {cause['cause']} during shutdown")
        elif after is not None and after is not After.RECOVER:  # a planned stop, not a failure
            self.records.add("stop", pid=child.pid, message=f"ended by {cause['cause']}", at=self._stop_began,
                             cause=self._stop_cause if after is After.STAY_STOPPED else self.recoveries.current.cause)
        else:
            self.records.add("exit", pid=child.pid, **cause)
        last_words = self.health.exited()
        self._set(Phase.EXITED)
        if after is None:
            logger.warning("{} pid {} exited: {}", self.name, child.pid, cause["cause"])
            self.recoveries.begin("exit", str(cause["cause"]), child.pid)
        outcome = exit_outcome(code, self.recoveries.current.cause if stopping else str(cause["cause"]),
                               self.program.restart, self.program.no_restart_exit_codes, after, last_words,
                               self.hooks.exit_rules)
        if outcome.next is Next.STOP:
            self._set(Phase.STOPPED)
        elif outcome.next is Next.STOP_CLEAN:
            self.recoveries.end()
            self.records.add("stop", pid=child.pid, cause="exited cleanly", message=f"restart = {self.program.restart}")
            self._set(Phase.STOPPED)
        elif outcome.next is Next.RESTART_NOW:
            if not self._promote_standby():
                self._start_soon()
        elif outcome.next is Next.FAIL:
            self._fail(outcome.cause, outcome.rule, pid=child.pid)
        else:
            self._schedule_restart()

    def _schedule_restart(self) -> None:
        """First restart at once; then graduated backoff with jitter (watchdog.core.restart_policy)."""
        recovery = self.recoveries.current
        decision = self.failures.failed(recovery.failed_pid, recovery.cause)
        self.recoveries.delayed(decision.delay)
        if self._promote_standby():
            return
        if decision.delay == 0:
            self._start_soon()
        else:
            self._set(Phase.BACKOFF)
            self.failures.back_off(decision.delay, self._start_soon)

    def _fail(self, cause: str, rule: str, pid: int | None) -> None:
        logger.error("{} failed: {}; not restarting until asked", self.name, cause)
        self.recoveries.failed(cause)
        if self.standby is not None:
            self.standby.stop(self.ctx.settings.term_grace)  # it would take over on its own
        if self.phase is not Phase.FAILED:
            self._set(Phase.FAILED)
        self.records.add("failed", cause=cause, pid=pid)
        self.alerts.fire(rule, f"{self.name} failed: {cause}; not restarting it")
