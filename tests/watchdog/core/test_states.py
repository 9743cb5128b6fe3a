"""The state machine: named states, every state reachable, a forbidden transition an explicit error (not assert)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT
from watchdog.core.states import TRANSITIONS, State, StateMachine, TransitionError


def test_every_state_has_its_transitions_and_is_reachable() -> None:
    assert set(TRANSITIONS) == set(State)
    assert {target for targets in TRANSITIONS.values() for target in targets} == set(State)


def test_changes_are_reported_and_a_forbidden_one_raises() -> None:
    seen: list[tuple[State, State]] = []
    machine = StateMachine("monitor:x", lambda old, new: seen.append((old, new)))
    machine.set(State.STARTING)
    machine.set(State.RUNNING)
    with pytest.raises(TransitionError, match="monitor:x: transition running -> backoff is not allowed"):
        machine.set(State.BACKOFF)
    assert seen == [(State.STOPPED, State.STARTING), (State.STARTING, State.RUNNING)]
    assert machine.state is State.RUNNING and str(machine.state) == "running"


def test_the_check_survives_python_dash_O() -> None:
    code = ("from watchdog.core.states import State, StateMachine, TransitionError\n"
            "m = StateMachine('x', lambda old, new: None)\n"
            "try:\n    m.set(State.RUNNING)\nexcept TransitionError:\n    print('refused')\n")
    done = subprocess.run([sys.executable, "-O", "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == "refused", done.stderr
