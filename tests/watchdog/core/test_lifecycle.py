"""One lifecycle per child: the watcher driven through an operator restart, a hang, a crash loop, shutdown,
reload and an operator start of a failed program with real worker processes, and the phases it went through
recorded at the one place they change (`StateMachine.set`). Each sequence is the lifecycle as
docs/ARCHITECTURE.md draws it."""
from __future__ import annotations

import enum
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.watchdog.core.test_supervision import run, supervise, worker, write_settings
from watchdog.core.start_order import stop_in_order
from watchdog.core.states import SPELLS, TRANSITIONS, Phase, Spell, StateMachine
from watchdog.shared.programs import Program

P = Phase


class Transitions:
    """Every change any machine makes while the test runs: (machine, old, new)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, enum.Enum, enum.Enum]] = []

    def of(self, name: str) -> list[enum.Enum]:
        return [new for machine, _, new in self.seen if machine == name]

    def all_in_their_tables(self) -> bool:
        return all(new in {**TRANSITIONS, **SPELLS}[old] for _, old, new in self.seen)  # type: ignore[index]


@pytest.fixture
def transitions(monkeypatch: pytest.MonkeyPatch) -> Transitions:
    recorded = Transitions()
    original = StateMachine.set

    def recording(machine: StateMachine, new: enum.Enum) -> None:
        old = machine.state
        original(machine, new)
        recorded.seen.append((machine.name, old, new))

    monkeypatch.setattr(StateMachine, "set", recording)
    return recorded


def test_an_operator_restart_then_shutdown(tmp_path: Path, transitions: Transitions) -> None:
    async def scenario() -> None:
        async with supervise(write_settings(tmp_path), [worker("monitor:a")]) as s:
            old = await s.running("monitor:a")
            answer = await s.arbiter.restart("monitor:a")
            assert answer["old_pid"] == old and answer["pid"] not in (None, old)
            await s.running("monitor:a")
            watcher = s.watcher("monitor:a")
        assert watcher.phase is P.STOPPED
        with pytest.raises(RuntimeError, match="shutting down"):
            await watcher.restart()
        (stop,) = [r for r in s.records("monitor:a", "stop") if r["cause"] == "shutdown"]
        assert stop["pid"] == answer["pid"]
    run(scenario)
    assert transitions.of("monitor:a") == [P.STARTING, P.HEALTHY, P.STOPPING_TO_RESTART, P.EXITED, P.STARTING,
                                           P.HEALTHY, P.STOPPING_FOR_SHUTDOWN, P.EXITED, P.STOPPED]
    assert transitions.all_in_their_tables()


def test_a_hang_is_stopped_to_recover_and_restarted(tmp_path: Path, transitions: Transitions) -> None:
    async def scenario() -> None:
        async with supervise(write_settings(tmp_path), [worker("monitor:a")]) as s:
            os.kill(await s.running("monitor:a"), signal.SIGSTOP)
            await s.record("monitor:a", "healthy")
    run(scenario)
    assert transitions.of("monitor:a")[:6] == [P.STARTING, P.HEALTHY, P.STOPPING_TO_RECOVER, P.EXITED, P.STARTING,
                                               P.HEALTHY]
    assert transitions.all_in_their_tables()


def test_a_reload_stops_for_reload_and_the_program_stays_stopped(tmp_path: Path, transitions: Transitions) -> None:
    async def scenario() -> None:
        async with supervise(write_settings(tmp_path), [worker("monitor:a")]) as s:
            pid = await s.running("monitor:a")
            watcher = s.watcher("monitor:a")
            await stop_in_order([watcher], lambda w: "reload: removed", reload=True)  # as Arbiter.reload does
            assert watcher.phase is P.STOPPED and watcher.pid is None
            (stop,) = s.records("monitor:a", "stop")
            assert stop["cause"] == "reload: removed" and stop["pid"] == pid
    run(scenario)
    assert transitions.of("monitor:a") == [P.STARTING, P.HEALTHY, P.STOPPING_FOR_RELOAD, P.EXITED, P.STOPPED]


def test_a_crash_loop_backs_off_and_its_spell_is_entered_once(tmp_path: Path, transitions: Transitions) -> None:
    async def scenario() -> None:
        config = write_settings(tmp_path, crash_loop_exits=3)
        async with supervise(config, [worker("monitor:a", "--exit-after", "0", "--code", "1")]) as s:
            await s.record("monitor:a", "restart", count=5, timeout=20)
    run(scenario)
    phases = transitions.of("monitor:a")
    # Exited on its own each time (READY=1 may or may not be heard first): the first restart at once, then backoff.
    assert P.STOPPING_TO_RECOVER not in phases and phases.count(P.BACKOFF) >= 3
    first_exits = [i for i, p in enumerate(phases) if p is P.EXITED][:2]
    assert phases[first_exits[0] + 1] is P.STARTING and phases[first_exits[1] + 1] is P.BACKOFF
    assert transitions.of("monitor:a history") == [Spell.CRASH_LOOP]
    assert transitions.all_in_their_tables()


def test_an_operator_start_of_a_failed_program_starts_it_and_one_that_cannot_spawn_fails(
        tmp_path: Path, transitions: Transitions) -> None:
    async def scenario() -> None:
        missing = Program("web", (str(tmp_path / "missing"),))
        async with supervise(write_settings(tmp_path), [worker("monitor:a", "--exit-after", "0", "--code", "2"),
                                                        missing]) as s:
            await s.record("monitor:a", "failed")
            answer = await s.arbiter.restart("monitor:a")
            assert answer["old_pid"] is None and answer["pid"] is not None
            await s.record("monitor:a", "failed", count=2)
            await s.record("web", "failed")
            assert (await s.arbiter.restart("web"))["pid"] is None and s.watcher("web").phase is P.FAILED
    run(scenario)
    # READY=1 may or may not be heard before the exit: the phases that decide are these.
    assert [p for p in transitions.of("monitor:a") if p is not P.HEALTHY] == [
        P.STARTING, P.EXITED, P.FAILED, P.STARTING, P.EXITED, P.FAILED, P.STOPPED]
    assert transitions.of("web") == [P.FAILED, P.STOPPED]
    assert transitions.all_in_their_tables()


def test_a_verdict_out_of_order_is_refused_by_the_watcher_also_under_python_dash_O(tmp_path: Path) -> None:
    """The watcher's verdict methods change the phase unconditionally: the table, not a guard, refuses
    "not healthy now" for a program that never started."""
    code = f"""
import asyncio
from pathlib import Path
from watchdog.core.context import Context
from watchdog.core.states import TransitionError
from watchdog.core.watcher import Watcher
from watchdog.shared.config import WatchdogConfig
from watchdog.shared.logs import StderrSink
from watchdog.shared.programs import Program
from watchdog.shared.recovery_log import RecoveryLog

async def main() -> None:
    data = Path({str(tmp_path)!r})
    context = Context(WatchdogConfig(), data, RecoveryLog(data / "r.jsonl"), None, None, None, StderrSink(),
                      lambda watcher: None)
    watcher = Watcher(Program("monitor:x", ("true",)), context)
    try:
        watcher.lost_health()
    except TransitionError as exc:
        print(exc)
    finally:
        watcher.close()

asyncio.run(main())
"""
    done = subprocess.run([sys.executable, "-O", "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "monitor:x: transition stopped -> ready is not allowed", done.stderr
