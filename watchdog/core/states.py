"""A program's states and the one place they change (as in supervisor's process.py).

    STOPPED -> STARTING -> RUNNING (ready / healthy) -> STOPPING (hang, operator, reload, shutdown) -> EXITED
    EXITED -> STARTING (immediate restart) | BACKOFF -> STARTING | FAILED (a no-restart exit) | STOPPED

A transition outside TRANSITIONS raises TransitionError: a bug in the
supervisor must be loud, and `assert` would vanish under `python -O`.
"""
from __future__ import annotations

import enum
import time
from collections.abc import Callable

from loguru import logger


class State(str, enum.Enum):
    STOPPED = "stopped"
    STARTING = "starting"  # spawned (or queued to spawn), not yet ready
    RUNNING = "running"
    BACKOFF = "backoff"  # waiting out a restart delay
    STOPPING = "stopping"  # stop signal sent (hang, operator, reload or shutdown), waiting for the exit
    EXITED = "exited"
    FAILED = "failed"  # a no-restart exit (2, 4 for our own components): not restarted until asked

    def __str__(self) -> str:
        return self.value


TRANSITIONS: dict[State, frozenset[State]] = {
    State.STOPPED: frozenset({State.STARTING, State.FAILED}),
    State.STARTING: frozenset({State.RUNNING, State.STOPPING, State.EXITED}),
    State.RUNNING: frozenset({State.STOPPING, State.EXITED}),
    State.STOPPING: frozenset({State.EXITED}),
    State.EXITED: frozenset({State.STARTING, State.BACKOFF, State.FAILED, State.STOPPED}),
    State.BACKOFF: frozenset({State.STARTING, State.STOPPED, State.FAILED}),
    State.FAILED: frozenset({State.STARTING, State.STOPPED}),
}


class TransitionError(RuntimeError):
    """A state change the machine does not allow: a supervisor bug, never an operator error."""


class StateMachine:
    """The current state, since when, and `on_change(old, new)` after every change."""

    def __init__(self, name: str, on_change: Callable[[State, State], None]) -> None:
        self.name = name
        self.state = State.STOPPED
        self.since = time.monotonic()
        self._on_change = on_change

    def set(self, new: State) -> None:
        if new not in TRANSITIONS[self.state]:
            raise TransitionError(f"{self.name}: transition {self.state} -> {new} is not allowed")
        logger.debug("{} {} -> {}", self.name, self.state, new)
        old, self.state = self.state, new
        self.since = time.monotonic()
        self._on_change(old, new)

    def age(self) -> float:
        return time.monotonic() - self.since
