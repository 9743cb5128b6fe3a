"""The failure history without processes: a fake clock and no jitter give the policy's exact steps; a crash
loop is alerted once and resolved by a healthy spell; a stop during the spell keeps the history."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.watchdog.fakes import bench
from tests.conftest import until
from watchdog.core.restart_policy import RestartPolicy
from watchdog.core.failure_history import FailureHistory
from watchdog.core.states import Spell

POLICY = RestartPolicy(initial=0.1, maximum=1.0, crash_loop_exits=3, crash_loop_window=60.0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def history(tmp_path: Path, reset_after: float = 60.0):
    b = bench(tmp_path)
    clock = Clock()
    part = FailureHistory("monitor:a", POLICY, reset_after, b.records("monitor:a"), b.program_alerts("monitor:a"),
                    clock=clock, jitter=lambda: 0.0)
    return part, clock, b


def test_delays_step_up_from_the_second_failure_and_a_crash_loop_is_alerted_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        part, clock, b = history(tmp_path)
        delays = []
        for _ in range(5):
            clock.now += 1.0
            delays.append(part.failed(4242, "exit code 1").delay)
        assert delays == pytest.approx([0.0, 0.1, 0.2, 0.4, 0.8])
        assert part.spell.state is Spell.CRASH_LOOP
        await asyncio.sleep(0)  # records are written right after the callback
        assert b.events() == ["crash_loop"]
        assert [a[0] for a in b.alerts.fired] == ["crash_loop"] and "3 exits in 60 s" in b.alerts.fired[0][2]
    asyncio.run(scenario())


def test_a_healthy_spell_clears_the_history_and_ends_the_crash_loop(tmp_path: Path) -> None:
    async def scenario() -> None:
        part, clock, b = history(tmp_path, reset_after=0.05)
        for _ in range(3):
            part.failed(4242, "exit code 1")
        part.healthy()
        await until(lambda: not part.times, 2, "the history cleared")
        assert part.spell.state is Spell.CALM and [r[0] for r in b.alerts.resolved] == ["crash_loop"]
        assert part.failed(4242, "exit code 1").delay == 0.0  # at once again
    asyncio.run(scenario())


def test_a_stop_during_the_healthy_spell_keeps_the_history(tmp_path: Path) -> None:
    async def scenario() -> None:
        part, clock, _ = history(tmp_path, reset_after=0.05)
        part.failed(4242, "exit code 1")
        part.healthy()
        part.interrupted()
        assert part._timers.remaining("reset") is None  # nothing left to clear it
        assert len(part.times) == 1
        part.clear()  # an operator restart
        assert not part.times
    asyncio.run(scenario())


def test_the_backoff_timer_says_when_it_fires_and_can_be_cancelled(tmp_path: Path) -> None:
    async def scenario() -> None:
        part, _, _ = history(tmp_path)
        started = []
        assert part.next_start_in() is None
        part.back_off(0.05, lambda: started.append(1))
        assert 0 < (part.next_start_in() or 0) <= 0.05
        await until(lambda: started, 2, "the backoff start")
        assert part.next_start_in() is None
        part.back_off(0.05, lambda: started.append(2))
        part.cancel_backoff()
        assert part.next_start_in() is None and started == [1]
        part.close()
    asyncio.run(scenario())
