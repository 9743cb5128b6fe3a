"""The checks without a process: /proc reads (watchdog.probes) replaced, so what each check concludes from
what it reads is driven directly; a failing check calls `unwell(event, cause)` and nothing else."""
from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest

from tests.watchdog.fakes import FakeChild, bench
from tests.watchdog.test_supervision import until
from watchdog import hooks, probes
from watchdog.checks import Checks
from watchdog.child_health import ChildHealth
from watchdog.config_model import WatchdogConfig
from watchdog.programs import Check, Program

SETTINGS = dataclasses.replace(WatchdogConfig(), process_check_period=0.02, start_timeout=60.0)


class Events:
    def became_healthy(self) -> None: ...

    def changed(self) -> None: ...


def armed(tmp_path: Path, program: Program) -> tuple[Checks, list[tuple[str, str]], ChildHealth]:
    b = bench(tmp_path)
    health = ChildHealth(program, b.program_alerts(program.name), Events())
    child = FakeChild(started_at=time.monotonic())
    health.begin(child)
    failed: list[tuple[str, str]] = []
    checks = Checks(program, hooks.load(""), SETTINGS, health, lambda event, cause: failed.append((event, cause)),
                    b.records(program.name), tmp_path, None)  # type: ignore[arg-type]  # no HTTP check here
    checks.arm(child)  # type: ignore[arg-type]
    return checks, failed, health


def test_a_stopped_process_is_a_hang(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stopped = {"now": False}
    monkeypatch.setattr(probes, "is_stopped", lambda pid: stopped["now"])
    monkeypatch.setattr(probes, "proc_sample", lambda pid, now: probes.ProcSample(now, "S", 1.0))

    async def scenario() -> None:
        checks, failed, _ = armed(tmp_path, Program("monitor:a", ("true",), ready=Check("notify")))
        stopped["now"] = True
        await until(lambda: failed, 2, "the process check")
        assert failed == [("hang", "process is stopped (SIGSTOP): it cannot answer or heartbeat")]
        checks.cancel()
    asyncio.run(scenario())


def test_memory_above_the_limit_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probes, "is_stopped", lambda pid: False)
    monkeypatch.setattr(probes, "proc_sample", lambda pid, now: probes.ProcSample(now, "S", 1.0))
    monkeypatch.setattr(probes, "rss_bytes", lambda pid: 300 * 1024 * 1024)

    async def scenario() -> None:
        checks, failed, _ = armed(tmp_path, Program("monitor:a", ("true",), ready=Check("notify"), rss_limit_mb=200))
        await until(lambda: failed, 3, "the memory check")
        assert failed == [("rss_limit", "resident memory 300 MB above rss_limit_mb 200")]
        checks.cancel()
    asyncio.run(scenario())


def test_a_missed_heartbeat_without_cpu_is_a_hang_and_one_in_time_is_not(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probes, "is_stopped", lambda pid: False)
    monkeypatch.setattr(probes, "proc_sample", lambda pid, now: probes.ProcSample(now, "S", 1.0))  # asleep, no CPU

    async def scenario() -> None:
        program = Program("monitor:a", ("true",), ready=Check("notify"), watchdog_sec=0.5)
        checks, failed, health = armed(tmp_path, program)
        health.ready_by_check()
        for _ in range(4):  # beats every 0.1 s for 0.4 s: never late (watchdog_sec 0.5)
            await asyncio.sleep(0.1)
            checks.heartbeat()
        assert not failed
        await until(lambda: failed, 3, "the heartbeat check")
        assert failed[0][0] == "hang" and "no CPU time used" in failed[0][1]
        checks.cancel()
    asyncio.run(scenario())
