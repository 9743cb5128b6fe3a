"""A watcher's failures and exits: stopping a child a check found unwell, the exit, and what comes next.

A part of `Watcher` (watchdog/watcher.py), split out by job; it works on the watcher's own state.
"""
from __future__ import annotations

import asyncio
import random
import signal
import time

from loguru import logger

from watchdog import exit_handoff
from watchdog.child import ChildProcess, exit_cause
from watchdog.exitcodes import EXIT_CONFIG, EXIT_NEEDS_OPERATOR
from watchdog.restart_policy import decide
from watchdog.states import State

# What to do when a child we are stopping has exited.
RECOVER = "recover"  # a failed check: restart with backoff, counts towards a crash loop
RESTART_NOW = "restart now"  # operator restart: at once, not counted
STAY_STOPPED = "stay stopped"  # shutdown, reload

# Exit 4 is a session that was never paired: a logout is seen live by the health probe (`logged_out`), not as an exit.
FAILED_RULES = {EXIT_CONFIG: "config_failed", EXIT_NEEDS_OPERATOR: "not_paired"}  # other no-restart codes: config_failed


class WatcherExits:
    """A failed check, an exit, and the reaction: restart with backoff, a crash loop, or FAILED."""

    def unwell(self, event: str, cause: str) -> None:
        """A check failed (hang, unhealthy, rss_limit): SIGTERM, SIGKILL after term_grace, then restart."""
        child = self.child
        if child is None or not child.running or self.state not in (State.STARTING, State.RUNNING):
            return
        logger.warning("{} {}: {}; stopping pid {}", self.name, event, cause, child.pid)
        self._begin_recovery(event, cause, child.pid)
        self._stop_child(child, self.ctx.settings.term_grace, RECOVER, planned=False)
        self.records.add(event, cause=cause, pid=child.pid)
        self.alerts.fire("hang", f"{self.name} {event}: {cause}; restarting it")

    def _begin_recovery(self, kind: str, cause: str, pid: int | None) -> None:
        self.recovery.begin(kind, cause, pid)
        self.last_cause = cause

    def _stop_child(self, child: ChildProcess, grace: float, after: str, planned: bool = True) -> asyncio.Task:
        """Planned stops use the program's stop_signal; a failed check's stop is SIGTERM (SIGCONT with both)."""
        self._after_exit = after
        self.checks.cancel()
        self._cancel_timer("reset")
        if self.state is not State.STOPPING:
            self._set_state(State.STOPPING)
        return self.run_task(child.stop(grace, self.program.signal_number if planned else signal.SIGTERM))

    def on_exit(self, child: ChildProcess) -> None:
        """The pidfd fired: the child (or the standby) has ended (and is reaped)."""
        if self.standby is not None and child is self.standby.process:
            self.standby.ended(child)
            return
        if child is not self.child:
            return
        exit_handoff.record(self.ctx.data_dir, self.name, child)  # the next process dates its outage by it
        self.checks.cancel()
        self._cancel_timer("reset")
        code = child.returncode if child.returncode is not None else 0
        cause = exit_cause(code)
        stopping = self.state is State.STOPPING
        if self.shutting_down and not stopping:  # it got the stop signal before we sent ours (control-group)
            self.records.add("stop", pid=child.pid, cause="shutdown", message=f"ended by {cause['cause']} during shutdown")
        elif stopping and self._after_exit != RECOVER:  # a planned stop, not a failure
            self.records.add("stop", pid=child.pid, message=f"ended by {cause['cause']}",
                             cause=self._stop_cause if self._after_exit == STAY_STOPPED else self.recovery.cause)
        else:
            self.records.add("exit", pid=child.pid, **cause)
        last_words = "" if self.ready else self.status_text  # a refusal at start (e.g. a corrupt store) says why
        self.ready = self.started = self.healthy = False
        self.condition = "exited"
        self._set_state(State.EXITED)
        if self.shutting_down and not stopping:
            self._set_state(State.STOPPED)
            return
        if stopping:
            if self._after_exit == STAY_STOPPED:
                self._set_state(State.STOPPED)
            elif self._after_exit == RESTART_NOW:
                self.recovery.delay = 0.0
                if not self._promote_standby():
                    self._start_soon()
            elif self.program.restart == "never":
                self._fail(f"{self.recovery.cause}; restart = never", "hang", pid=child.pid)
            else:
                self._schedule_restart()
            return
        logger.warning("{} pid {} exited: {}", self.name, child.pid, cause["cause"])
        self._begin_recovery("exit", str(cause["cause"]), child.pid)
        program = self.program
        if code in program.no_restart_exit_codes:
            meaning = last_words or {EXIT_CONFIG: "configuration error",
                                     EXIT_NEEDS_OPERATOR: "needs an operator (not paired)"}.get(code, "a no-restart exit code")
            self._fail(f"{cause['cause']}: {meaning}", FAILED_RULES.get(code, "config_failed"), pid=child.pid)
        elif program.restart == "never" or (program.restart == "on-failure" and code == 0):
            if code == 0:
                self.recovery.end()
                self.records.add("stop", pid=child.pid, cause="exited cleanly", message=f"restart = {program.restart}")
                self._set_state(State.STOPPED)
            else:
                self._fail(f"{cause['cause']}; restart = never", "config_failed", pid=child.pid)
        else:
            self._schedule_restart()

    def _schedule_restart(self) -> None:
        """First restart at once; then graduated backoff with jitter (watchdog.restart_policy)."""
        now = time.monotonic()
        self._failures.append(now)
        decision = decide(self._failures, now, self.policy, random.random())
        if decision.crash_loop and not self._crash_loop:
            self._crash_loop = True
            cause = f"{decision.recent} exits in {self.policy.crash_loop_window:g} s"
            logger.error("{} crash loop: {}; backing off up to {:g} s", self.name, cause, self.policy.maximum)
            self.records.add("crash_loop", cause=cause, backoff_s=round(decision.delay, 3), pid=self.recovery.failed_pid)
            self.alerts.fire("crash_loop", f"{self.name} is crash-looping: {cause} (last: {self.recovery.cause}); "
                                     f"backing off up to {self.policy.maximum:g} s")
        self.recovery.delay = decision.delay
        if self._promote_standby():
            return
        if decision.delay == 0:
            self._start_soon()
        else:
            self._set_state(State.BACKOFF)
            self._schedule("backoff", decision.delay, self._start_soon)

    def _fail(self, cause: str, rule: str, pid: int | None) -> None:
        logger.error("{} failed: {}; not restarting until asked", self.name, cause)
        self.last_cause = cause
        self.recovery.end()
        if self.standby is not None:
            self.standby.stop(self.ctx.settings.term_grace)  # it would take over on its own
        if self.state is not State.FAILED:
            self._set_state(State.FAILED)
        self.records.add("failed", cause=cause, pid=pid)
        self.alerts.fire(rule, f"{self.name} failed: {cause}; not restarting it")
