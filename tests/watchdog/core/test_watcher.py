"""One program's declared behaviour under a real arbiter: restart modes, no-restart exit codes, stop signal,
environment and working directory, readiness by TCP or by running long enough, and when a backoff ends."""
from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, until
from tests.watchdog.core.test_supervision import run, supervise, worker, write_settings
from watchdog.shared.programs import Check, Program
from watchdog.core.states import State

WEB_APP = ROOT / "tests" / "children" / "web_app.py"


def test_restart_modes_and_no_restart_exit_codes(tmp_path: Path) -> None:
    async def scenario() -> None:
        programs = [worker("clean", "--exit-after", "0.1", "--code", "0", restart="on-failure"),
                    worker("never", "--exit-after", "0.1", "--code", "1", restart="never"),
                    worker("seven", "--exit-after", "0.1", "--code", "7", no_restart_exit_codes=(7,)),
                    worker("always", "--exit-after", "0.1", "--code", "0", "--once-marker", str(tmp_path / "once"))]
        async with supervise(write_settings(tmp_path), programs) as s:
            await s.record("always", "healthy")  # exit 0 under restart = always: restarted
            await s.record("clean", "stop")
            (failed_never,) = await s.record("never", "failed")
            (failed_seven,) = await s.record("seven", "failed")
            assert s.watcher("clean").state is State.STOPPED and not s.records("clean", "restart")
            assert s.watcher("never").state is State.FAILED and "restart = never" in failed_never["cause"]
            assert s.watcher("seven").state is State.FAILED and "exit code 7" in failed_seven["cause"]
            assert not s.records("never", "restart") and not s.records("seven", "restart")
    run(scenario)


def test_the_stop_signal_env_and_cwd_are_the_programs_own(tmp_path: Path) -> None:
    dump, signals = tmp_path / "env.json", tmp_path / "signal"
    workdir = tmp_path / "work"
    workdir.mkdir()

    async def scenario() -> None:
        program = worker("web", "--dump-env", str(dump), "--signal-log", str(signals), stop_signal="SIGINT",
                         env=(("NODE_ENV", "production"),), cwd=str(workdir))
        async with supervise(write_settings(tmp_path), [program]) as s:
            await s.running("web")
            seen = json.loads(dump.read_text())
            assert seen["env"]["NODE_ENV"] == "production" and seen["cwd"] == str(workdir)
        assert signals.read_text() == "SIGINT"
    run(scenario)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_readiness_by_tcp_connect_and_by_running_long_enough(tmp_path: Path) -> None:
    port = free_port()

    async def scenario() -> None:
        listener = Program("listener", (sys.executable, str(WEB_APP), "--port", str(port), "--listen-after", "0.5"),
                           ready=Check("tcp", port=port))
        patient = Program("patient", (sys.executable, "-c", "import time; time.sleep(60)"),
                          ready=Check("started", seconds=0.5))
        async with supervise(write_settings(tmp_path), [listener, patient]) as s:
            started = time.monotonic()
            await s.running("patient")
            assert time.monotonic() - started >= 0.4  # not before its `started` seconds
            await s.running("listener")
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                pass
            assert s.watcher("listener").condition == "ready"
    run(scenario)


def test_backoff_says_when_the_next_start_is(tmp_path: Path) -> None:
    async def scenario() -> None:
        config = write_settings(tmp_path, backoff_initial=3.0, backoff_max=6.0)
        async with supervise(config, [worker("monitor:a", "--exit-after", "0", "--code", "1")]) as s:
            watcher = s.watcher("monitor:a")
            await until(lambda: watcher.state == State.BACKOFF, 15, "the second exit (the first restart is at once)")
            status = s.arbiter.status()[0]
            assert status["state"] == "backoff" and 0 < status["next_start_in_s"] <= 6.0, status
            running = [c for c in s.arbiter.status() if c["state"] != "backoff"]
            assert all(c["next_start_in_s"] is None for c in running)
    run(scenario)
