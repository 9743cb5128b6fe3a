"""Planned stops without processes: a fake watcher (the `Stoppable` protocol) records what it was asked."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.watchdog.fakes import bench
from watchdog.core.planned_stops import PlannedStops
from watchdog.core.restart_policy import After, RestartPolicy
from watchdog.core.restarts import Restarts
from watchdog.core.states import State
from watchdog.core.throttle import Launcher


class FakeWatcher:
    def __init__(self, running: bool) -> None:
        self.pid: int | None = 100 if running else None
        self.state = State.RUNNING if running else State.FAILED
        self.calls: list[tuple] = []
        self.stops: PlannedStops | None = None

    def stop_child(self, grace: float, after: After) -> asyncio.Task | None:
        self.calls.append(("stop_child", grace, after))
        if self.pid is None:
            return None
        assert self.stops is not None
        self.stops.stopping(after)
        return asyncio.get_running_loop().create_task(self._exit(after))

    async def _exit(self, after: After) -> None:
        self.pid = None
        if after is After.RESTART_NOW:  # what the watcher does on the exit: start at once, say the pid
            await self.start()

    async def start(self) -> None:
        self.calls.append(("start",))
        self.pid, self.state = 101, State.STARTING
        assert self.stops is not None
        self.stops.spawned(self.pid)

    def begin_recovery(self, kind: str, cause: str, pid: int | None) -> None:
        self.calls.append(("begin_recovery", kind, cause, pid))

    def stay_stopped(self) -> None:
        self.calls.append(("stay_stopped",))


def planned(tmp_path: Path, running: bool) -> tuple[PlannedStops, FakeWatcher, Restarts, Launcher]:
    b = bench(tmp_path)
    watcher = FakeWatcher(running)
    restarts = Restarts("monitor:a", RestartPolicy(), 60.0, b.records("monitor:a"), b.program_alerts("monitor:a"))
    launcher = Launcher(1, 1.0, lambda name, why: None)
    watcher.stops = PlannedStops("monitor:a", watcher, restarts, None, launcher, term_grace=3.0, stop_timeout=7.0)
    return watcher.stops, watcher, restarts, launcher


def test_an_operator_restart_stops_the_child_with_its_grace_and_answers_the_new_pid(tmp_path: Path) -> None:
    async def scenario() -> None:
        stops, watcher, restarts, _ = planned(tmp_path, running=True)
        restarts.failed(100, "exit code 1")
        answer = await stops.restart("operator restart")
        assert answer == {"name": "monitor:a", "old_pid": 100, "pid": 101, "state": "starting"}
        assert watcher.calls[:2] == [("begin_recovery", "operator", "operator restart", 100),
                                     ("stop_child", 3.0, After.RESTART_NOW)]
        assert not restarts.failures  # the next failure restarts at once
    asyncio.run(scenario())


def test_an_operator_start_of_a_failed_program_starts_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        stops, watcher, _, _ = planned(tmp_path, running=False)
        answer = await stops.restart()
        assert answer["old_pid"] is None and answer["pid"] == 101 and ("start",) in watcher.calls
    asyncio.run(scenario())


def test_shutdown_stops_with_stop_timeout_and_refuses_restarts_after(tmp_path: Path) -> None:
    async def scenario() -> None:
        stops, watcher, restarts, launcher = planned(tmp_path, running=True)
        restarts.back_off(30.0, lambda: None)
        await stops.stop("reload: removed")
        assert stops.shutting_down and stops.cause == "reload: removed" and stops.after is After.STAY_STOPPED
        assert ("stop_child", 7.0, After.STAY_STOPPED) in watcher.calls and restarts.next_start_in() is None
        with pytest.raises(RuntimeError, match="shutting down"):
            await stops.restart()
    asyncio.run(scenario())


def test_a_program_without_a_child_just_stays_stopped(tmp_path: Path) -> None:
    async def scenario() -> None:
        stops, watcher, _, _ = planned(tmp_path, running=False)
        await stops.stop()
        assert watcher.calls == [("stop_child", 7.0, After.STAY_STOPPED), ("stay_stopped",)]
    asyncio.run(scenario())
