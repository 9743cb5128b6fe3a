"""One program's failure history, its backoff timer and its crash loop; the delays come from restart_policy.

Why apart from the watcher: the history has its own life (cleared by a
healthy spell of `backoff_reset_after`, or by an operator restart), and the
crash loop is entered, alerted and left by it alone, through its own checked
machine (`Spell` in watchdog/core/states.py). The clock and the jitter are
parameters so tests drive it without processes or waiting.
"""
from __future__ import annotations

import collections
import random
import time
from collections.abc import Callable

from loguru import logger

from watchdog.core.program_alerts import ProgramAlerts
from watchdog.core.recovery import Records
from watchdog.core.restart_policy import Decision, RestartPolicy, decide
from watchdog.core.states import SPELLS, Spell, StateMachine
from watchdog.core.timers import Timers


class FailureHistory:
    """Failures since the last healthy spell (`times`), the spell (calm or crash loop), the backoff timer."""

    def __init__(self, name: str, policy: RestartPolicy, reset_after: float, records: Records,
                 alerts: ProgramAlerts, clock: Callable[[], float] = time.monotonic,
                 jitter: Callable[[], float] = random.random) -> None:
        self.name = name
        self.policy = policy
        self.reset_after = reset_after
        self.records = records
        self.alerts = alerts
        self._clock = clock
        self._jitter = jitter
        self.times: collections.deque[float] = collections.deque(maxlen=64)  # failures since the last healthy spell
        self.spell = StateMachine(f"{name} history", SPELLS, Spell.CALM, lambda old, new: None)
        self._timers = Timers()

    def failed(self, pid: int | None, last_cause: str) -> Decision:
        """A failure now (of `pid`, for `last_cause`): the restart decision; a crash loop is alerted once."""
        now = self._clock()
        self.times.append(now)
        decision = decide(self.times, now, self.policy, self._jitter())
        if decision.crash_loop and self.spell.state is Spell.CALM:
            self.spell.set(Spell.CRASH_LOOP)
            cause = f"{decision.recent} exits in {self.policy.crash_loop_window:g} s"
            logger.error("{} crash loop: {}; backing off up to {:g} s", self.name, cause, self.policy.maximum)
            self.records.add("crash_loop", cause=cause, backoff_s=round(decision.delay, 3), pid=pid)
            self.alerts.fire("crash_loop", f"{self.name} is crash-looping: {cause} (last: {last_cause}); "
                                           f"backing off up to {self.policy.maximum:g} s")
        return decision

    def clear(self) -> None:
        """An operator restart: the next failure restarts at once again."""
        self.times.clear()

    def healthy(self) -> None:
        """The child is healthy: if it stays so for reset_after, the history is cleared."""
        self._timers.schedule("reset", self.reset_after, self._healthy_long_enough)

    def interrupted(self) -> None:
        """The child is being stopped or has exited: its healthy spell does not count."""
        self._timers.cancel("reset")

    def _healthy_long_enough(self) -> None:
        self.times.clear()
        if self.spell.state is Spell.CRASH_LOOP:
            self.spell.set(Spell.CALM)
            self.alerts.resolve("crash_loop", f"{self.name} has been healthy for {self.reset_after:g} s")

    def back_off(self, delay: float, start: Callable[[], None]) -> None:
        self._timers.schedule("backoff", delay, start)

    def cancel_backoff(self) -> None:
        self._timers.cancel("backoff")

    def next_start_in(self) -> float | None:
        """Seconds until the backoff timer starts the program (None: it is not backing off)."""
        remaining = self._timers.remaining("backoff")
        return None if remaining is None else round(max(0.0, remaining), 3)

    def close(self) -> None:
        self._timers.cancel_all()
