"""A program's lifecycle and the one place it changes (as in supervisor's process.py).

Every state that decides what the watcher does next is a `Phase`, and every
change goes through `StateMachine.set`, which checks it against a table:

    STOPPED -> STARTING -> STARTED (answering) -> HEALTHY <-> READY (up, its upstream away)
    STARTING | STARTED | HEALTHY | READY -> STOPPING_TO_RECOVER (a failed check: hang, unhealthy, rss_limit)
        | STOPPING_TO_RESTART (operator) | STOPPING_FOR_SHUTDOWN | STOPPING_FOR_RELOAD -> EXITED
    STARTING | STARTED | HEALTHY | READY -> EXITED (it ended on its own)
    EXITED -> STARTING (at once, or a standby promoted) | BACKOFF -> STARTING | FAILED | STOPPED

`State` is what status shows of a phase (`running` for HEALTHY and READY, ...),
unchanged for operators and the control API. The failure history has its own
small table (`Spell`: CALM <-> CRASH_LOOP, watchdog/core/failure_history.py), checked the same way.
A transition outside a table raises TransitionError: a bug in the supervisor
must be loud, and `assert` would vanish under `python -O`.
"""
from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

from loguru import logger


class State(str, enum.Enum):
    """What status shows: one word per phase (or group of phases)."""

    STOPPED = "stopped"
    STARTING = "starting"  # spawned, not yet ready
    RUNNING = "running"
    BACKOFF = "backoff"  # waiting out a restart delay
    STOPPING = "stopping"  # stop signal sent (hang, operator, reload or shutdown), waiting for the exit
    EXITED = "exited"
    FAILED = "failed"  # a no-restart exit (2, 4 for our own components): not restarted until asked

    def __str__(self) -> str:
        return self.value


class Phase(str, enum.Enum):
    """The watcher's states: each decides what happens next."""

    STOPPED = "stopped"  # not started, or stopped and staying so
    STARTING = "starting"  # spawned (or a standby promoted): nothing heard from it yet
    STARTED = "started"  # answering (a probe's word): its start-up grace is over, not yet ready
    HEALTHY = "healthy"  # ready (READY=1, its ready check, or `started` seconds) and healthy
    READY = "ready"  # ready, but not healthy now: its upstream is away or an operator is needed (no restart)
    STOPPING_TO_RECOVER = "stopping to recover"  # a failed check: restarted by the policy once it exits
    STOPPING_TO_RESTART = "stopping to restart"  # operator restart: started again at once, not counted
    STOPPING_FOR_SHUTDOWN = "stopping for shutdown"  # stays stopped
    STOPPING_FOR_RELOAD = "stopping for reload"  # removed or changed: stays stopped (a new watcher takes over)
    EXITED = "exited"  # ended; what comes next is being decided (or the spawn waits for leftovers to go)
    BACKOFF = "backoff"  # waiting out a restart delay, or for the watchdog-wide start bounds
    FAILED = "failed"  # not restarted until an operator asks

    def __str__(self) -> str:
        return self.value

    @property
    def shown(self) -> State:
        return SHOWN[self]

    @property
    def stopping(self) -> bool:
        return SHOWN[self] is State.STOPPING

    @property
    def up(self) -> bool:
        """A child runs and is ours to judge (not being stopped)."""
        return SHOWN[self] in (State.STARTING, State.RUNNING)


SHOWN: dict[Phase, State] = {
    Phase.STOPPED: State.STOPPED,
    Phase.STARTING: State.STARTING,
    Phase.STARTED: State.STARTING,
    Phase.HEALTHY: State.RUNNING,
    Phase.READY: State.RUNNING,
    Phase.STOPPING_TO_RECOVER: State.STOPPING,
    Phase.STOPPING_TO_RESTART: State.STOPPING,
    Phase.STOPPING_FOR_SHUTDOWN: State.STOPPING,
    Phase.STOPPING_FOR_RELOAD: State.STOPPING,
    Phase.EXITED: State.EXITED,
    Phase.BACKOFF: State.BACKOFF,
    Phase.FAILED: State.FAILED,
}

STOPPING = frozenset(p for p in Phase if p.stopping)
_ENDS = STOPPING | {Phase.EXITED}  # what a running child can go to (a stop, or its exit)

TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.STOPPED: frozenset({Phase.STARTING, Phase.FAILED}),
    Phase.STARTING: _ENDS | {Phase.STARTED, Phase.HEALTHY},
    Phase.STARTED: _ENDS | {Phase.HEALTHY},
    Phase.HEALTHY: _ENDS | {Phase.READY},
    Phase.READY: _ENDS | {Phase.HEALTHY},
    # A stop can be overtaken by a later one's purpose (an operator restart during a hang's stop; a shutdown
    # during either); never by a failed check, whose checks are cancelled once a stop begins.
    Phase.STOPPING_TO_RECOVER: frozenset({Phase.EXITED, Phase.STOPPING_TO_RESTART, Phase.STOPPING_FOR_SHUTDOWN,
                                          Phase.STOPPING_FOR_RELOAD}),
    Phase.STOPPING_TO_RESTART: frozenset({Phase.EXITED, Phase.STOPPING_FOR_SHUTDOWN, Phase.STOPPING_FOR_RELOAD}),
    Phase.STOPPING_FOR_SHUTDOWN: frozenset({Phase.EXITED}),
    Phase.STOPPING_FOR_RELOAD: frozenset({Phase.EXITED, Phase.STOPPING_FOR_SHUTDOWN}),
    Phase.EXITED: frozenset({Phase.STARTING, Phase.BACKOFF, Phase.FAILED, Phase.STOPPED}),
    Phase.BACKOFF: frozenset({Phase.STARTING, Phase.STOPPED, Phase.FAILED}),
    Phase.FAILED: frozenset({Phase.STARTING, Phase.STOPPED}),
}


class Spell(str, enum.Enum):
    """A program's failure history (watchdog/core/failure_history.py): in a crash loop (alerted) or not."""

    CALM = "calm"
    CRASH_LOOP = "crash loop"  # crash_loop_exits failures within crash_loop_window; ends after a healthy spell

    def __str__(self) -> str:
        return self.value


SPELLS: dict[Spell, frozenset[Spell]] = {
    Spell.CALM: frozenset({Spell.CRASH_LOOP}),
    Spell.CRASH_LOOP: frozenset({Spell.CALM}),
}


class TransitionError(RuntimeError):
    """A state change the machine does not allow: a supervisor bug, never an operator error."""


S = TypeVar("S", bound=enum.Enum)


class StateMachine(Generic[S]):
    """The current state, since when, and `on_change(old, new)` after every change; `set` is the only way to
    change it and refuses what `transitions` does not list."""

    def __init__(self, name: str, transitions: Mapping[S, frozenset[S]], initial: S,
                 on_change: Callable[[S, S], None]) -> None:
        self.name = name
        self.transitions = transitions
        self.state = initial
        self.since = time.monotonic()
        self._on_change = on_change

    def set(self, new: S) -> None:
        if new not in self.transitions[self.state]:
            raise TransitionError(f"{self.name}: transition {self.state} -> {new} is not allowed")
        logger.debug("{} {} -> {}", self.name, self.state, new)
        old, self.state = self.state, new
        self.since = time.monotonic()
        self._on_change(old, new)

    def age(self) -> float:
        return time.monotonic() - self.since


def program_machine(name: str, on_change: Callable[[Phase, Phase], None]) -> StateMachine[Phase]:
    return StateMachine(name, TRANSITIONS, Phase.STOPPED, on_change)
