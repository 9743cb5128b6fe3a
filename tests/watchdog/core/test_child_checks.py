"""Checks that load cannot fool: the hung-or-starved judgement from /proc, a start-up grace until READY, a child
starved of CPU given time (and recorded), while a busy loop or a deadlock is still a hang. The last tests drive
the checks without a process: /proc reads (watchdog.core.probes) replaced, a failing check only calls `unwell`."""
from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import until, wait_until
from tests.watchdog.fakes import FakeChild, Verdicts, bench
from tests.watchdog.core.test_supervision import run, supervise, worker, write_settings
from watchdog.core import hooks
from watchdog.core import probes
from watchdog.core.child_checks import Checks, Verdict, judge
from watchdog.core.child_health import ChildHealth
from watchdog.core.self_watch import SelfWatch
from watchdog.shared.config_model import WatchdogConfig
from watchdog.core.probes import ProcSample, proc_sample
from watchdog.shared.recovery_log import RecoveryLog
from watchdog.shared.programs import Check, Program


def sample(at: float, state: str, cpu: float) -> ProcSample:
    return ProcSample(at, state, cpu)


@pytest.mark.parametrize(("before", "now", "starting", "verdict"), [
    (sample(0, "R", 1.0), sample(2, "T", 1.0), False, Verdict.HANG),  # SIGSTOP
    (sample(0, "S", 1.0), sample(2, "S", 1.0), False, Verdict.HANG),  # asleep, no CPU: a deadlock
    (sample(0, "R", 1.0), sample(2, "R", 1.0), False, Verdict.HANG),  # runnable but never scheduled either
    (sample(0, "R", 1.0), sample(2, "R", 1.4), False, Verdict.OVERLOADED),  # 20 % of a core: starved
    (sample(0, "R", 1.0), sample(2, "R", 2.9), False, Verdict.HANG),  # 95 %: a busy loop
    (sample(0, "S", 1.0), sample(2, "S", 1.2), False, Verdict.HANG),  # sleeping between bits of work, no heartbeat
    (sample(0, "D", 0.1), sample(2, "S", 0.9), True, Verdict.STARTING),  # importing: progress before READY
    (sample(0, "S", 0.1), sample(2, "S", 0.1), True, Verdict.HANG),  # stuck before READY
    (None, sample(2, "R", 1.0), False, Verdict.HANG),
    (sample(0, "R", 1.0), None, False, Verdict.HANG),  # gone
])
def test_judge(before: ProcSample | None, now: ProcSample | None, starting: bool, verdict: Verdict) -> None:
    assert judge(before, now, starting).verdict is verdict


def test_a_child_that_had_a_whole_heartbeat_interval_of_cpu_is_hung_however_loaded_the_machine() -> None:
    starved_spinner = judge(sample(0, "R", 1.0), sample(8, "R", 2.2), starting=False, budget=1.0)
    assert starved_spinner.verdict is Verdict.HANG and "1.2 s of CPU since its last sign of life" in starved_spinner.why
    assert judge(sample(0, "R", 1.0), sample(8, "R", 1.8), starting=False, budget=1.0).verdict is Verdict.OVERLOADED


def test_proc_samples_of_real_processes() -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        wait_until(lambda: (s := proc_sample(sleeper.pid, 0)) and s.state == "S", 10, message="the sleeper asleep")
        first = proc_sample(spinner.pid, time.monotonic())
        later = wait_until(lambda: (s := proc_sample(spinner.pid, time.monotonic())) and s.cpu_s > first.cpu_s and s,
                           10, message="the spinner gaining CPU time")
        assert later.state == "R"
        os.kill(spinner.pid, signal.SIGSTOP)
        wait_until(lambda: proc_sample(spinner.pid, 0).state == "T", 10, message="the spinner stopped")
    finally:
        for proc in (sleeper, spinner):
            proc.kill()
            proc.wait()
    assert proc_sample(spinner.pid, 0) is None


@pytest.mark.slow
def test_a_slow_cold_start_is_given_time_until_ready_but_a_busy_loop_after_ready_is_a_hang(tmp_path: Path) -> None:
    async def scenario() -> None:
        # 2.5 s of CPU before the first heartbeat with watchdog_sec 1: the old check killed it as hung, over and over
        slow = worker("monitor:slow", "--busy-before-ready", "2.5")
        spinner = worker("monitor:spin", "--spin-after-ready")
        async with supervise(write_settings(tmp_path), [slow, spinner]) as s:
            await s.running("monitor:slow", timeout=30)
            assert not s.records("monitor:slow", "hang") and s.watcher("monitor:slow").restart_count == 0
            (hang, *_) = await s.record("monitor:spin", "hang", timeout=20)
            assert "missed heartbeat" in hang["cause"] and "busy at" in hang["cause"]
    run(scenario)


@pytest.mark.slow
def test_a_child_starved_of_cpu_is_overloaded_not_hung_and_is_not_restarted(tmp_path: Path) -> None:
    flag = tmp_path / "starve"

    async def scenario() -> None:
        async with supervise(write_settings(tmp_path), [worker("monitor:a", "--starve-file", str(flag))]) as s:
            pid = await s.running("monitor:a")
            flag.touch()  # a CPU hog of its own, on its CPU, at a higher priority: runnable, gaining CPU slowly
            (overloaded,) = await s.record("monitor:a", "overloaded", timeout=20)
            assert overloaded["pid"] == pid and "starved of CPU" in overloaded["cause"]
            flag.unlink()
            watcher = s.watcher("monitor:a")
            beat = watcher.checks.last_heartbeat
            await s.running("monitor:a")
            deadline = time.monotonic() + 10
            while watcher.checks.last_heartbeat == beat and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert watcher.pid == pid and watcher.restart_count == 0 and not s.records("monitor:a", "hang")
    run(scenario)


SETTINGS = dataclasses.replace(WatchdogConfig(), process_check_period=0.02, start_timeout=60.0)


def armed(tmp_path: Path, program: Program, gaps: SelfWatch | None = None) -> tuple[Checks, list[tuple[str, str]],
                                                                                 ChildHealth]:
    b = bench(tmp_path)
    health = ChildHealth(program, b.program_alerts(program.name), Verdicts(program.name))
    child = FakeChild(started_at=time.monotonic())
    health.begin(child)
    failed: list[tuple[str, str]] = []
    checks = Checks(program, hooks.load(""), SETTINGS, health, lambda event, cause: failed.append((event, cause)),
                    b.records(program.name), tmp_path, None,  # type: ignore[arg-type]  # no HTTP check here
                    gaps or SelfWatch())
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


def test_a_gap_in_the_watchdogs_own_loop_re_arms_the_heartbeat_deadline_instead_of_judging_by_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop blocked for 3.5 s (as a SIGSTOPped watchdog): a silent child is not judged by that time; it gets a
    whole watchdog_sec from the wake-up, and is judged (hung: asleep, no CPU) once that passes unanswered."""
    monkeypatch.setattr(probes, "proc_sample", lambda pid, now: probes.ProcSample(now, "S", 1.0))
    log = RecoveryLog(tmp_path / "gaps.jsonl")

    async def scenario() -> None:
        gaps = SelfWatch(log)
        ticking = asyncio.get_running_loop().create_task(gaps.tick())
        await asyncio.sleep(0)
        checks, failed, _ = armed(tmp_path, Program("monitor:a", ("true",), ready=Check("notify"), watchdog_sec=1.0),
                                  gaps)
        time.sleep(3.5)  # the fault itself: the watchdog's loop does not run (nothing is waited for here)
        woke = time.monotonic()
        await until(lambda: failed, 5, "the hang, judged by watched time")
        assert time.monotonic() - woke >= 0.9, "judged by the time the watchdog did not watch"
        assert failed[0][0] == "hang" and "no WATCHDOG=1 for 1.0 s" in failed[0][1]
        (gap,) = [r for r in log.read() if r["event"] == "loop_gap"]
        assert gap["component"] == "watchdog" and 3.4 < gap["gap_s"] < 5
        ticking.cancel()
        checks.close()
    asyncio.run(scenario())
