"""A watcher's view of its child's health: sd_notify datagrams, probe answers, and becoming healthy.

A part of `Watcher` (watchdog/watcher.py), split out by job; it works on the watcher's own state.
"""
from __future__ import annotations

import os
import time

from loguru import logger

from watchdog import probes
from watchdog.notify_server import Notification
from watchdog.programs import Check
from watchdog.states import State

RECOVERY_ALERTS = ("hang", "config_failed", "logged_out", "not_paired")  # resolved when the program is healthy again


class WatcherHealth:
    """Readiness and health of the current child: what it says (sd_notify) and what its checks find."""

    def _on_notify(self, note: Notification) -> None:
        child = self.child
        if child is None or not child.running or not self._from_child(note.sender, child.pid):
            return  # a previous instance's last words, or a stranger
        if note.watchdog:
            self.checks.heartbeat()
        if note.status is not None:
            self.status_text = note.status
            self.ctx.on_change(self)
        if note.stopping:
            logger.info("{} says it is stopping", self.name)
        if note.ready:
            if self.program.ready.kind == "notify":
                self.ready_by_check()
            else:
                self.checks.wake()  # it says it is serving: probe now, not at the next period

    @staticmethod
    def _from_child(sender: int | None, pid: int) -> bool:
        if sender is None or sender == pid:
            return True
        try:
            return os.getpgid(sender) == pid  # something the child started, in its process group
        except OSError:
            return False

    def ready_by_check(self) -> None:
        """Readiness satisfied (READY=1, or running for `started` seconds)."""
        if self.ready or self.child is None or not self.child.running:
            return
        self.ready = True
        self._started_up()
        if self.condition == "starting":
            self.condition = "ready"
        self._became_healthy()

    def _started_up(self) -> None:
        if not self.started:
            self.started = True
            self.checks.started_up()

    def on_probe(self, check: Check, result: probes.HealthResult, counts: bool) -> None:
        """A probe answered (failures are counted by the checks): what the answer means for health and alerts."""
        if self.state not in (State.STARTING, State.RUNNING):
            return
        was = (self.healthy, self.condition, self.settled)
        self.last_probe = result
        if result.kind != probes.FAILURE:
            self.condition = "ready" if result.state == "ok" else result.state
            self._started_up()
        if result.kind == probes.OK:
            self.alerts.answered_ok(self.condition)
            if check.target == self.program.ready.target:
                self.ready = True
            if self.ready and not self.healthy:
                self._became_healthy()
        elif result.kind == probes.OUTAGE:
            self.healthy = False
            if counts:  # before initial_delay, an outage is just the program starting up
                self.alerts.outage(result)
        elif result.kind == probes.OPERATOR:
            self.healthy = False
            self.alerts.operator_needed(result)
        if (self.healthy, self.condition, self.settled) != was:
            self.ctx.on_change(self)

    def _became_healthy(self) -> None:
        if self.state is State.STARTING:
            self._set_state(State.RUNNING)
            if self.child is not None:
                logger.info("{} running, pid {} ({:.2f} s after its start)", self.name, self.child.pid,
                            time.monotonic() - self.child.started_at)
        self.healthy = True
        recovery = self.recovery
        if recovery.active:
            downtime = recovery.elapsed()
            self.records.add("healthy", pid=self.pid, cause=recovery.cause, downtime_ms=round(downtime * 1000, 1))
            self.ctx.metrics.observe_recovery(self.name, downtime)
            logger.info("{} healthy again after {:.3f} s ({})", self.name, downtime, recovery.cause)
            recovery.end()
        for rule in RECOVERY_ALERTS:
            self.alerts.resolve(rule, f"{self.name} is healthy again")
        self._schedule("reset", self.ctx.settings.backoff_reset_after, self._healthy_long_enough)
        if self.standby is not None:
            self.standby.after_healthy()  # after the start-up, not during it
        self.ctx.on_change(self)

    def _healthy_long_enough(self) -> None:
        """Healthy for backoff_reset_after: the next failure restarts at once again and the crash loop is over."""
        self._failures.clear()
        if self._crash_loop:
            self._crash_loop = False
            self.alerts.resolve("crash_loop", f"{self.name} has been healthy for "
                                        f"{self.ctx.settings.backoff_reset_after:g} s")

    def overloaded(self, cause: str, log_only: bool = False) -> None:
        """A starved child was given time instead of being called hung: say so (once per episode)."""
        logger.warning("{} overloaded, not hung: {}", self.name, cause)
        if not log_only:
            self.records.add("overloaded", pid=self.pid, cause=cause)
