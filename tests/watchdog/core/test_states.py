"""The state machines: named phases, every phase reachable, a forbidden transition an explicit error (not
assert), also under `python -O`."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT
from watchdog.core.states import SPELLS, TRANSITIONS, Phase, Spell, State, StateMachine, TransitionError, \
    program_machine


@pytest.mark.parametrize("table", [TRANSITIONS, SPELLS])
def test_every_state_has_its_transitions_and_is_reachable(table: dict) -> None:
    states = set(type(next(iter(table))))
    assert set(table) == states
    assert {target for targets in table.values() for target in targets} == states


def test_every_phase_is_shown_as_one_of_the_status_words() -> None:
    assert {phase.shown for phase in Phase} == set(State)
    assert {p for p in Phase if p.shown is State.RUNNING} == {Phase.HEALTHY, Phase.READY}
    assert {p for p in Phase if p.stopping} == {Phase.STOPPING_TO_RECOVER, Phase.STOPPING_TO_RESTART,
                                                Phase.STOPPING_FOR_SHUTDOWN, Phase.STOPPING_FOR_RELOAD}


def test_changes_are_reported_and_a_forbidden_one_raises() -> None:
    seen: list[tuple[Phase, Phase]] = []
    machine = program_machine("monitor:x", lambda old, new: seen.append((old, new)))
    machine.set(Phase.STARTING)
    machine.set(Phase.HEALTHY)
    with pytest.raises(TransitionError, match="monitor:x: transition healthy -> backoff is not allowed"):
        machine.set(Phase.BACKOFF)
    assert seen == [(Phase.STOPPED, Phase.STARTING), (Phase.STARTING, Phase.HEALTHY)]
    assert machine.state is Phase.HEALTHY and machine.state.shown is State.RUNNING


def test_a_shutdown_stop_is_never_turned_into_a_restart_and_a_crash_loop_ends_only_by_calming() -> None:
    machine = program_machine("monitor:x", lambda old, new: None)
    for phase in (Phase.STARTING, Phase.HEALTHY, Phase.STOPPING_FOR_SHUTDOWN):
        machine.set(phase)
    for later in (Phase.STOPPING_TO_RESTART, Phase.STOPPING_TO_RECOVER, Phase.STARTING):
        with pytest.raises(TransitionError):
            machine.set(later)
    spell = StateMachine("monitor:x history", SPELLS, Spell.CALM, lambda old, new: None)
    with pytest.raises(TransitionError):
        spell.set(Spell.CALM)


def test_the_check_survives_python_dash_O() -> None:
    code = ("from watchdog.core.states import Phase, program_machine, TransitionError\n"
            "m = program_machine('x', lambda old, new: None)\n"
            "try:\n    m.set(Phase.HEALTHY)\nexcept TransitionError:\n    print('refused')\n")
    done = subprocess.run([sys.executable, "-O", "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == "refused", done.stderr
