"""The watchdog's watch over itself: one timer notices a gap in its own loop (re-arming the checks, recorded
`loop_gap`) and a step of the wall clock (recorded `clock_step`), each recorded once. How the checks use a gap:
tests/watchdog/core/test_child_checks.py."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from tests.conftest import until
from watchdog.core.self_watch import SelfWatch
from watchdog.shared import clock
from watchdog.shared.recovery_log import RecoveryLog


def test_the_watchdog_records_each_step_once(tmp_path: Path, fixed_clock: Callable) -> None:
    fixed_clock(None)  # running clocks, set right again afterwards
    log = RecoveryLog(tmp_path / "recoveries.jsonl")

    async def scenario() -> list[dict]:
        task = asyncio.create_task(SelfWatch(log, period=0.01).tick())
        await asyncio.sleep(0)  # the watch takes its first reading
        clock.step_for_tests(-3600)
        try:
            return await until(lambda: list(log.read()), message="the step recorded")
        finally:
            task.cancel()

    (record,) = asyncio.run(scenario())
    assert (record["component"], record["event"], round(record["step_s"])) == ("watchdog", "clock_step", -3600)
    assert record["message"] == "clock stepped back 1 h 0 min 0 s"


def test_one_tick_notices_a_gap_in_its_own_loop_and_a_step_of_the_clock(tmp_path: Path, fixed_clock: Callable) -> None:
    """A VM frozen for 5 s and restored with its clock set back: one `loop_gap` (the checks re-armed once) and
    one `clock_step`, by the same timer."""
    fixed_clock(None)
    log = RecoveryLog(tmp_path / "recoveries.jsonl")
    now = [100.0]
    watch = SelfWatch(log, monotonic=lambda: now[0], period=0.01)
    rearmed: list[float] = []
    watch.subscribe(rearmed.append)

    async def scenario() -> list[dict]:
        task = asyncio.create_task(watch.tick())
        await asyncio.sleep(0.05)  # quiet ticks: the (fake) monotonic clock stands still, no gap
        assert not rearmed and not list(log.read())
        now[0] += 5.0
        clock.step_for_tests(-60)
        try:
            return await until(lambda: len(list(log.read())) == 2 and list(log.read()), message="both recorded")
        finally:
            task.cancel()

    gap, step = sorted(asyncio.run(scenario()), key=lambda r: r["event"] != "loop_gap")
    assert (gap["event"], gap["gap_s"]) == ("loop_gap", 5.0) and rearmed == [5.0] and watch.count == 1
    assert (step["event"], round(step["step_s"])) == ("clock_step", -60)
