"""What `status` and `restart` tell an operator when the watchdog is gone, frozen, backing off, or misnamed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import BASE_CONFIG, ROOT, Processes, wait_until
from tests.watchdog.control.test_control_client_live import ServerThread, cli
from watchdog.shared import endpoints
from watchdog.shared.config import WatchdogConfig
from watchdog.components import load
from watchdog.control.client import _component_in, status_table

# A stand-in for a wedged watchdog: it publishes its control URL and listens, but never answers.
SILENT_WATCHDOG = """
import socket, sys, time
from pathlib import Path
from watchdog.shared import endpoints
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(8)
endpoints.publish(Path(sys.argv[1]), "watchdog", {"control": f"http://127.0.0.1:{listener.getsockname()[1]}"})
print("ready", flush=True)
time.sleep(600)
"""


@pytest.fixture
def silent_watchdog(data_dir: Path) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen([sys.executable, "-c", SILENT_WATCHDOG, str(data_dir)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_a_frozen_watchdog_is_named_stopped_at_once(config_path: Path, silent_watchdog: subprocess.Popen) -> None:
    os.kill(silent_watchdog.pid, signal.SIGSTOP)
    wait_until(lambda: Path(f"/proc/{silent_watchdog.pid}/stat").read_text().split(") ")[1][0] == "T",
               message="the process to be stopped")
    started = time.monotonic()
    result = cli(config_path, "status")
    took = time.monotonic() - started
    assert result.returncode == 1
    assert f"the watchdog (pid {silent_watchdog.pid})" in result.stderr
    assert "its process is stopped (SIGSTOP" in result.stderr and f"kill -CONT {silent_watchdog.pid}" in result.stderr
    assert took < 10, took  # no request was waited for (an interpreter start, not the 15 s of the issue)


@pytest.mark.slow
def test_a_wedged_watchdog_is_named_not_answering_within_2_s(config_path: Path,
                                                              silent_watchdog: subprocess.Popen) -> None:
    started = time.monotonic()
    result = cli(config_path, "status")
    took = time.monotonic() - started
    assert result.returncode == 1
    assert f"the watchdog (pid {silent_watchdog.pid})" in result.stderr
    assert "is not answering within 2 s; its process is sleeping (not stopped" in result.stderr
    assert 2 <= took < 12, took


@pytest.mark.slow
def test_leftover_processes_holding_the_data_dir_are_listed(config_path: Path, data_dir: Path,
                                                            procs: Processes) -> None:
    sim = procs.start("sim", "--data-dir", str(data_dir))
    bridge = procs.start("bridge", "--data-dir", str(data_dir), "--account", "main")
    other = procs.start("sim", "--data-dir", str(data_dir.parent / "other"))  # another data directory: not ours
    wait_until(lambda: endpoints.read(data_dir, "bridge:main"), 20, message="the bridge to publish its endpoints")
    result = cli(config_path, "status", "--data-dir", str(data_dir))  # (the asking process is not a leftover)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith("wa-watchdog status: watchdog is not running (no control endpoint in")
    assert lines[1] == f"2 processes left over from an earlier watchdog still use {data_dir}:"
    assert lines[2].split() == ["pid", str(bridge.pid), "bridge:main"]
    assert lines[3].split() == ["pid", str(sim.pid), "sim"]
    assert lines[4].endswith(f"kill {bridge.pid} {sim.pid}")
    assert str(other.pid) not in result.stderr


def test_a_leftover_is_named_by_the_program_whose_signature_its_command_line_carries(write_config: Callable[..., Path]) -> None:
    """From the programs' `signature` (the slices' own and [[programs]]), not from product names in the client."""
    config = load(write_config(BASE_CONFIG + '\n[[programs]]\nname = "pinger"\nargv = ["wa-watchdog", "ping"]\n'))
    own = ["python", "-m", "watchdog.cli"]
    assert _component_in([*own, "bridge", "--account", "main", "--data-dir", "d"], config) == "bridge:main"
    assert _component_in([*own, "bridge", "--account", "main", "--standby"], config) == "bridge:main#standby"
    assert _component_in([*own, "monitor", "--project", "mohadin"], config) == "monitor:mohadin"
    assert _component_in([*own, "sim", "--data-dir", "d"], config) == "sim"
    assert _component_in(["wa-watchdog", "ping", "--data-dir", "d"], config) == "pinger"
    assert _component_in([*own, "run", "--config", "c"], config) == "run"
    assert _component_in([*own, "drops", "--data-dir", "d"], config) == "?"


def test_a_misspelt_restart_lists_the_valid_names(config_path: Path, data_dir: Path) -> None:
    server = ServerThread(WatchdogConfig())
    try:
        endpoints.publish(data_dir, "watchdog", {"control": server.url})
        result = cli(config_path, "restart", "bridge:mian")
    finally:
        server.stop()
    assert result.returncode == 1
    assert result.stderr.strip() == ("wa-watchdog restart: no component named bridge:mian; did you mean bridge:main? "
                                     "(components: bridge:main, monitor:lawley)")


def test_the_table_stays_narrow_and_shows_the_next_try() -> None:
    cause = "exit code 1: sqlite3.OperationalError: database or disk is full while writing the outbox"
    table = status_table([{"name": "monitor:velo", "pid": None, "state": "backoff", "healthy": False,
                           "uptime_s": None, "restarts": 7, "last_cause": cause, "endpoints": {},
                           "status_text": "", "next_start_in_s": 2.31}])
    header, row = table.splitlines()
    assert row.split()[:3] == ["monitor:velo", "-", "backoff"] and row.split()[3] == "3s"
    assert "exit code 1: sqlite3.OperationalError:…" in row and cause not in row
    assert len(row) < 120
