"""One program's alerts: which rules it has fired and not resolved, and an outage of what it depends on.

Kept apart from the watcher so that "what is firing" has one owner: the
watcher says what happened (a hang, a crash loop, an upstream outage, an
operator case, healthy again), this decides what is fired and resolved.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from loguru import logger

from watchdog.core.probes import HealthResult
from watchdog.shared import clock

if TYPE_CHECKING:
    from watchdog.core.context import Context


class ProgramAlerts:
    def __init__(self, name: str, context: Context, before_fire: Callable[[], None]) -> None:
        self.name = name
        self.ctx = context
        self._before_fire = before_fire  # the alert manager logs the alert itself: the cause goes first
        self.firing: set[str] = set()  # rules fired and not resolved
        self._operator: set[str] = set()  # of those, the ones an OK probe answer resolves
        self.outage_since: float | None = None  # epoch seconds an upstream outage began
        self._outage_rule = ""  # the rule that outage fired (the program's word for it: its hooks')

    @property
    def upstream_away(self) -> bool:
        """The program is up, but what it depends on is away or needs a person: no restart would help."""
        return self.outage_since is not None or bool(self._operator)

    def fire(self, rule: str, summary: str, duration_s: float | None = None) -> None:
        self._before_fire()
        self.firing.add(rule)
        self.ctx.alerts.fire(rule, self.name, summary, duration_s=duration_s)

    def resolve(self, rule: str, summary: str) -> None:
        if rule in self.firing:
            self.firing.discard(rule)
            self.ctx.alerts.resolve(rule, self.name, summary)

    def operator_needed(self, result: HealthResult) -> None:
        self._operator.add(result.state)
        self.fire(result.state, f"{self.name}: {result.state.replace('_', ' ')}"
                                f"{': ' + result.detail if result.detail else ''}; an operator is needed")

    def answered_ok(self, condition: str) -> None:
        """An OK probe answer: the upstream outage and every operator case are over."""
        self._end_outage(condition)
        for rule in list(self._operator):
            self._operator.discard(rule)
            self.resolve(rule, f"{self.name} is {condition} again")

    def healthy_again(self, rules: Iterable[str]) -> None:
        """The program is healthy again: `rules` (a hang, a failure by exit code) and every operator case are over."""
        for rule in (*rules, *sorted(self._operator)):
            self._operator.discard(rule)
            self.resolve(rule, f"{self.name} is healthy again")

    def outage(self, result: HealthResult, rule: str) -> None:
        """The program is fine but what it depends on is away: no restart; `rule` (its hooks' word for an outage)
        fired with the outage's duration."""
        now = clock.now_s()
        if self.outage_since is None:
            self.outage_since = result.outage_started_at or now
            self._outage_rule = rule
            logger.warning("{} {} ({}): an outage upstream, not restarting", self.name, result.state, result.detail)
        elif result.outage_started_at:
            self.outage_since = min(self.outage_since, result.outage_started_at)
        duration = max(0.0, now - self.outage_since)
        self.fire(self._outage_rule, f"{self.name} {result.state} for {duration:.0f} s"
                                f"{' (' + result.detail + ')' if result.detail else ''}", duration)

    def _end_outage(self, condition: str) -> None:
        if self.outage_since is None:
            return
        duration = max(0.0, clock.now_s() - self.outage_since)
        self.outage_since = None
        self.ctx.metrics.observe_outage(self.name, duration)
        self.resolve(self._outage_rule, f"{self.name} {condition} again after {duration:.0f} s")
