"""Watchdog-wide bounds: children starting at once (max_starting) and restarts per second (restart_rate); a spawn
within them happens in the caller's own call, one beyond them waits its turn and is recorded as `throttle`."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.watchdog.core.test_supervision import run, supervise, worker, write_settings
from watchdog.core.states import State
from watchdog.core.throttle import Launcher


def test_spawns_within_the_bounds_are_immediate_and_the_rest_wait_for_a_slot() -> None:
    async def scenario() -> None:
        throttled: list[tuple[str, str]] = []
        launcher = Launcher(2, 100.0, lambda name, why: throttled.append((name, why)))
        spawned: list[str] = []
        assert launcher.launch("a", lambda: spawned.append("a"), restart=False)
        assert launcher.launch("b", lambda: spawned.append("b"), restart=False)
        assert not launcher.launch("c", lambda: spawned.append("c"), restart=False)
        assert spawned == ["a", "b"] and throttled == [("c", "2 children starting (max_starting 2)")]
        launcher.done("a")
        assert spawned == ["a", "b", "c"] and launcher.starting == {"b", "c"}
        launcher.forget("b")
        launcher.close()
    asyncio.run(scenario())


@pytest.mark.slow
def test_restarts_beyond_the_rate_wait_for_a_token() -> None:
    async def scenario() -> None:
        throttled: list[str] = []
        launcher = Launcher(100, 2.0, lambda name, why: throttled.append(why))
        times: dict[str, float] = {}
        started = time.monotonic()
        for name in "abcd":
            launcher.launch(name, lambda name=name: times.setdefault(name, time.monotonic() - started), restart=True)
        assert set(times) == {"a", "b"}  # the burst: two at once
        while len(times) < 4:
            await asyncio.sleep(0.02)
        assert times["c"] >= 0.4 and times["d"] >= 0.9, times  # then two per second
        assert throttled[0] == "restart_rate 2 per second reached"
        launcher.close()
    asyncio.run(scenario())


@pytest.mark.slow
def test_no_more_than_max_starting_children_start_at_once_and_the_wait_is_recorded(tmp_path: Path) -> None:
    async def scenario() -> None:
        programs = [worker(f"monitor:{n}", "--ready-after", "0.3") for n in range(5)]
        async with supervise(write_settings(tmp_path, max_starting=2), programs) as s:
            most = 0
            while not all(w.state is State.RUNNING for w in s.arbiter.watchers.values()):
                most = max(most, sum(w.state is State.STARTING for w in s.arbiter.watchers.values()))
                await asyncio.sleep(0.01)
            assert most == 2
            throttled = [r for r in s.records(event="throttle")]
            assert len(throttled) == 3 and all("max_starting 2" in r["cause"] for r in throttled), throttled
    run(scenario)
