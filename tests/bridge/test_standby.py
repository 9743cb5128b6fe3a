"""`wa-watchdog bridge --standby`: a warm second bridge that waits on the session lock, holding nothing,
and takes the session over the moment the owner dies."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from bridge.session_lock import holder_pid
from tests.bridge_support import (bridge_url, health, rows, sessions, start_bridge, start_sim,
                                  streaming)
from tests.conftest import Processes, wait_until
from watchdog.shared import endpoints


def start_standby(procs: Processes, data_dir: Path, log: Path) -> subprocess.Popen:
    """Start a standby and wait until it is loaded and blocked on the lock (it says so on stderr)."""
    standby = procs.start("bridge", "--account", "main", "--standby", stdout=subprocess.DEVNULL,
                          stderr=open(log, "wb"))
    wait_until(lambda: f"standby pid {standby.pid}: waiting for session" in log.read_text(errors="replace"),
               timeout=15, message="the standby to wait for the session")
    return standby


@pytest.mark.slow
def test_a_standby_holds_nothing_while_waiting_and_takes_over_a_killed_bridge_losing_nothing(
        procs: Processes, data_dir: Path, tmp_path: Path) -> None:
    _, sim = start_sim(procs, data_dir)
    first, url = start_bridge(procs, data_dir)
    standby = start_standby(procs, data_dir, tmp_path / "standby.log")

    # Waiting: no session, no socket, no endpoint, no store work; the owner is untouched.
    assert standby.poll() is None
    assert holder_pid(data_dir / "accounts/main/session") == first.pid
    assert psutil.Process(standby.pid).net_connections(kind="all") == []
    assert bridge_url(data_dir, first) == url
    assert sessions(sim)["connections"] == 1
    assert health(url)["state"] == "connected"

    total = 400
    with streaming(sim, total, first_drop=3000000) as injected:
        wait_until(lambda: rows(data_dir, "SELECT COUNT(*) FROM messages")[0][0] >= total // 4, timeout=20,
                   message="the bridge to store a quarter of the stream")
        os.kill(first.pid, signal.SIGKILL)
        assert first.wait(timeout=10) == -signal.SIGKILL
        assert len(injected) < total, "the stream ended before the kill; nothing was tested"
        new_url = wait_until(lambda: bridge_url(data_dir, standby), timeout=10,
                             message="the standby to take over and publish its API")
        wait_until(lambda: health(new_url).get("state") == "connected", timeout=10, message="the standby connected")
    assert holder_pid(data_dir / "accounts/main/session") == standby.pid
    assert endpoints.read(data_dir, "bridge:main")["pid"] == standby.pid
    wait_until(lambda: rows(data_dir, "SELECT COUNT(*) FROM messages")[0][0] >= total, timeout=20,
               message=f"all {total} messages stored")
    stored = rows(data_dir, "SELECT id FROM messages")
    assert sorted(i for (i,) in stored) == sorted(injected)  # every message, each exactly once
    wait_until(lambda: sessions(sim)["queue_depth"] == 0, message="every message acknowledged")
    assert sessions(sim)["connections"] == 2 and sessions(sim)["stream_replaced"] == 0


@pytest.mark.slow
def test_a_standby_stopped_while_waiting_leaves_the_session_alone(procs: Processes, data_dir: Path,
                                                                 tmp_path: Path) -> None:
    _, sim = start_sim(procs, data_dir)
    first, url = start_bridge(procs, data_dir)
    standby = start_standby(procs, data_dir, tmp_path / "standby.log")
    standby.send_signal(signal.SIGTERM)
    assert standby.wait(timeout=10) == -signal.SIGTERM
    assert health(url)["state"] == "connected"
    assert holder_pid(data_dir / "accounts/main/session") == first.pid
    assert sessions(sim)["connections"] == 1
    assert rows(data_dir, "SELECT COUNT(*) FROM disconnect_windows")[0][0] == 0
