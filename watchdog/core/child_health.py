"""What is known of the current child's health: ready, started, healthy, its condition, its probes' last answer.

Why a part of its own: readiness (READY=1, a probe, running long enough) and
health (probe answers, an outage upstream, an operator case) are judged in
one place, and the watcher hears only the verdict it acts on: "healthy now"
(`became_healthy`) and "something shown in status changed" (`changed`).
Failures are not judged here: a check that fails stops the child (watchdog/core/child_checks.py).
"""
from __future__ import annotations

from typing import Protocol

from watchdog.core import hooks, probes
from watchdog.core.child import ChildProcess
from watchdog.core.program_alerts import ProgramAlerts
from watchdog.core.restart_policy import EXIT_RULES
from watchdog.shared import alert_rules
from watchdog.shared.programs import Check, Program


class HealthEvents(Protocol):
    def became_healthy(self) -> None: ...

    def changed(self) -> None: ...


class ChildHealth:
    def __init__(self, program: Program, alerts: ProgramAlerts, events: HealthEvents) -> None:
        self.program = program
        self.hooks = hooks.load(program.hooks)  # its words for an outage and its exits
        self.alerts = alerts
        # What being healthy again ends (besides operator cases): a hang, a failure by exit code.
        self._ended_by_health = tuple(dict.fromkeys(
            (alert_rules.HANG, *(r.rule for r in (*EXIT_RULES.values(), *self.hooks.exit_rules.values())))))
        self.events = events
        self.child: ChildProcess | None = None  # the child judged; None between children
        self.ready = False  # readiness satisfied (READY=1, its check, or `started` seconds)
        self.started = False  # ready, or answering its probe: the start-up grace is over
        self.healthy = False
        self.condition = ""  # the program's own word for its health (a bridge: connected, disconnected, ...)
        self.last_probe: probes.HealthResult | None = None  # the last answer of its liveness probe
        self.status_text = ""  # last STATUS= from the child

    def begin(self, child: ChildProcess) -> None:
        """`child` is now the program's process: nothing is known of it yet."""
        self.child = child
        self.ready = self.started = self.healthy = False
        self.condition = "starting"
        self.status_text = ""

    def stopping(self) -> None:
        """The watcher is stopping the child: answers from now on no longer count."""
        self.child = None

    def exited(self) -> str:
        """The child has exited; returns its last words: the STATUS= it gave if it never got ready (a refusal
        at start, e.g. a corrupt store, says why)."""
        last_words = "" if self.ready else self.status_text
        self.child = None
        self.ready = self.started = self.healthy = False
        self.condition = "exited"
        return last_words

    def status(self, text: str) -> None:
        self.status_text = text
        self.events.changed()

    def ready_by_check(self) -> None:
        """Readiness satisfied (READY=1, or running for `started` seconds)."""
        if self.ready or self.child is None or not self.child.running:
            return
        self.ready = self.started = True
        if self.condition == "starting":
            self.condition = "ready"
        self._healthy()

    def on_probe(self, check: Check, result: probes.HealthResult, counts: bool) -> None:
        """A probe answered (failures are counted by the checks): what the answer means for health and alerts."""
        if self.child is None:
            return
        was = (self.healthy, self.condition, self.upstream_settled)
        self.last_probe = result
        if result.kind != probes.FAILURE:
            self.condition = "ready" if result.state == "ok" else result.state
            self.started = True
        if result.kind == probes.OK:
            self.alerts.answered_ok(self.condition)
            if check.target == self.program.ready.target:
                self.ready = True
            if self.ready and not self.healthy:
                self._healthy()
        elif result.kind == probes.OUTAGE:
            self.healthy = False
            if counts:  # before initial_delay, an outage is just the program starting up
                self.alerts.outage(result, self.hooks.outage_rule)
        elif result.kind == probes.OPERATOR:
            self.healthy = False
            self.alerts.operator_needed(result)
        if (self.healthy, self.condition, self.upstream_settled) != was:
            self.events.changed()

    @property
    def upstream_settled(self) -> bool:
        """Up, but what it depends on is away or needs a person: waiting will not make it healthy."""
        return self.started and self.alerts.upstream_away

    def _healthy(self) -> None:
        self.healthy = True
        self.alerts.healthy_again(self._ended_by_health)
        self.events.became_healthy()
