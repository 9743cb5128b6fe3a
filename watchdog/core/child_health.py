"""What is known of the current child's health: its condition, its probes' last answer; judged into the
watcher's phases.

Why a part of its own: readiness (READY=1, a probe, running long enough) and
health (probe answers, an outage upstream, an operator case) are judged in
one place, and the watcher hears only the verdicts it acts on: "answering"
(the start-up grace is over), "healthy now", "not healthy now" and "something
shown in status changed". Started, ready and healthy are not flags here: they
are the watcher's phases (watchdog/core/states.py), read through `HealthEvents.judged`.
Failures are not judged here: a check that fails stops the child (watchdog/core/child_checks.py).
"""
from __future__ import annotations

from typing import Protocol

from watchdog.core import hooks, probes
from watchdog.core.child import ChildProcess
from watchdog.core.program_alerts import ProgramAlerts
from watchdog.core.restart_policy import EXIT_RULES
from watchdog.shared import alert_rules
from watchdog.core.states import Phase
from watchdog.shared.programs import Check, Program


STARTED = frozenset({Phase.STARTED, Phase.HEALTHY, Phase.READY})  # answering, or ready
READY = frozenset({Phase.HEALTHY, Phase.READY})


class HealthEvents(Protocol):
    """What the judgement needs of the watcher: its phase, and whom to tell a verdict."""

    @property
    def judged(self) -> Phase:
        """The phase health is read from (while a child is stopped, the one its stop began in)."""
        ...

    def answering(self) -> None:
        """STARTING -> STARTED: the start-up grace is over."""
        ...

    def became_healthy(self) -> None:
        """-> HEALTHY (from starting, or from READY again)."""
        ...

    def lost_health(self) -> None:
        """HEALTHY -> READY: up, but its upstream is away or an operator is needed."""
        ...

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
        self.condition = ""  # the program's own word for its health (a bridge: connected, disconnected, ...)
        self.last_probe: probes.HealthResult | None = None  # the last answer of its liveness probe
        self.status_text = ""  # last STATUS= from the child

    def begin(self, child: ChildProcess) -> None:
        """`child` is now the program's process: nothing is known of it yet."""
        self.child = child
        self.condition = "starting"
        self.status_text = ""

    @property
    def started(self) -> bool:
        """Ready, or answering its probe: the start-up grace is over."""
        return self.events.judged in STARTED

    @property
    def ready(self) -> bool:
        """Readiness satisfied (READY=1, its check, or `started` seconds)."""
        return self.events.judged in READY

    @property
    def healthy(self) -> bool:
        return self.events.judged is Phase.HEALTHY

    def stopping(self) -> None:
        """The watcher is stopping the child: answers from now on no longer count."""
        self.child = None

    def exited(self) -> str:
        """The child has exited; returns its last words: the STATUS= it gave if it never got ready (a refusal
        at start, e.g. a corrupt store, says why)."""
        last_words = "" if self.ready else self.status_text
        self.child = None
        self.condition = "exited"
        return last_words

    def status(self, text: str) -> None:
        self.status_text = text
        self.events.changed()

    def ready_by_check(self) -> None:
        """Readiness satisfied (READY=1, or running for `started` seconds)."""
        if self.ready or self.child is None or not self.child.running:
            return
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
            if not self.started:
                self.events.answering()
        if result.kind == probes.OK:
            self.alerts.answered_ok(self.condition)
            if (self.ready or check.target == self.program.ready.target) and not self.healthy:
                self._healthy()
        elif result.kind == probes.OUTAGE:
            if self.healthy:
                self.events.lost_health()
            if counts:  # before initial_delay, an outage is just the program starting up
                self.alerts.outage(result, self.hooks.outage_rule)
        elif result.kind == probes.OPERATOR:
            if self.healthy:
                self.events.lost_health()
            self.alerts.operator_needed(result)
        if (self.healthy, self.condition, self.upstream_settled) != was:
            self.events.changed()

    @property
    def upstream_settled(self) -> bool:
        """Up, but what it depends on is away or needs a person: waiting will not make it healthy."""
        return self.started and self.alerts.upstream_away

    def _healthy(self) -> None:
        self.alerts.healthy_again(self._ended_by_health)
        self.events.became_healthy()
