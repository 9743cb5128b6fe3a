"""The pieces every process shares: sd_notify sender, recovery log, published endpoints."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from watchdog.shared import endpoints
from watchdog.shared.recovery_log import RecoveryLog


def test_notifier_sends_unicode_status_that_sdnotify_would_drop(notify_socket: socket.socket) -> None:
    address = "@" + notify_socket.getsockname()[1:].decode()
    code = ("from watchdog.shared.notify import Notifier; n = Notifier(); "
            "n.ready('bridge main connected · monitors 6/6 ready · ✓'); n.heartbeat(); n.stopping()")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=30,
                   env={**os.environ, "NOTIFY_SOCKET": address})
    received = [notify_socket.recv(4096).decode("utf-8") for _ in range(3)]
    assert received == ["READY=1\nSTATUS=bridge main connected · monitors 6/6 ready · ✓", "WATCHDOG=1", "STOPPING=1"]


def test_notifier_never_blocks_on_a_receiver_that_stops_reading_and_owes_it_ready(notify_socket: socket.socket) -> None:
    """A paused watchdog reads nothing: 200 sends return at once (the queue holds 10), READY=1 dropped then goes
    with the next heartbeat once the receiver reads again, and the drops are counted in the child's log."""
    address = "@" + notify_socket.getsockname()[1:].decode()
    code = ("import sys, time\n"
            "from loguru import logger\n"
            "from watchdog.shared.notify import Notifier\n"
            "logger.remove(); logger.add(sys.stdout, format='{message}')\n"
            "n = Notifier(); started = time.monotonic()\n"
            "for _ in range(200): n.heartbeat()\n"
            "n.ready('up')\n"
            "print('sent', round(time.monotonic() - started, 3), 'dropped', n.dropped, flush=True)\n"
            "sys.stdin.readline()\n"  # the receiver has read everything
            "n.heartbeat()\n")
    child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "NOTIFY_SOCKET": address})
    try:
        _, seconds, _, dropped = child.stdout.readline().split()  # type: ignore[union-attr]
        assert float(seconds) < 1 and int(dropped) >= 150
        queued = [notify_socket.recv(4096) for _ in range(int(200 + 1 - int(dropped)))]
        assert set(queued) == {b"WATCHDOG=1"}
        child.stdin.write("\n")  # type: ignore[union-attr]
        child.stdin.flush()  # type: ignore[union-attr]
        assert notify_socket.recv(4096) == b"WATCHDOG=1\nREADY=1"
        assert child.wait(30) == 0
        assert f"{dropped} sd_notify messages dropped" in child.stdout.read()  # type: ignore[union-attr]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdin.close()  # type: ignore[union-attr]
        child.stdout.close()  # type: ignore[union-attr]


def test_a_childs_log_lines_into_a_pipe_nobody_reads_are_dropped_never_waited_for() -> None:
    """stderr a pipe the (paused) watchdog does not read: the child logs on; the pipe holds what it took."""
    read_end, write_end = os.pipe()
    code = ("import time\n"
            "from loguru import logger\n"
            "from watchdog.shared import logs\n"
            "logs.setup('bridge:main'); started = time.monotonic()\n"
            "for n in range(2000): logger.info('stored {} new of {} messages', n, n)\n"  # ~170 kB into 64 kB
            "print(time.monotonic() - started)\n")
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=write_end,
                              text=True, timeout=30)
    finally:
        os.close(write_end)
    try:
        assert done.returncode == 0 and float(done.stdout) < 5
        written = b""
        while chunk := os.read(read_end, 65536):
            written += chunk
        assert 0 < len(written) <= 65536 and b"stored 0 new of 0 messages" in written
    finally:
        os.close(read_end)


def test_notifier_is_silent_without_notify_socket() -> None:
    code = "from watchdog.shared.notify import Notifier; n = Notifier(); assert not n.enabled; n.ready('x'); n.heartbeat()"
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=30, env=env)


def test_recovery_log_appends_reads_and_rotates(tmp_path: Path) -> None:
    log = RecoveryLog(tmp_path / "recoveries.jsonl", max_bytes=400, keep=2)
    for i in range(12):
        log.append("bridge:main", "exit", cause="SIGKILL", pid=1000 + i)
    records = list(log.read())
    assert (tmp_path / "recoveries.jsonl.1").exists() and not (tmp_path / "recoveries.jsonl.3").exists()
    pids = [r["pid"] for r in records]
    assert pids == sorted(pids) and pids[-1] == 1011  # oldest first, newest kept
    assert all(r["component"] == "bridge:main" and r["event"] == "exit" for r in records)
    assert (tmp_path / "recoveries.jsonl").stat().st_size <= 400


def test_recovery_log_skips_a_torn_line_and_filters_by_time(tmp_path: Path) -> None:
    log = RecoveryLog(tmp_path / "r.jsonl")
    first = log.append("sim", "start")
    with open(log.path, "a") as f:
        f.write('{"time": 1, "component": "brid')  # a crash mid-write
        f.write("\n")
    second = log.append("bridge:main", "restart", pid=1, new_pid=2, none_is_dropped=None)
    assert [r["event"] for r in log.read()] == ["start", "restart"]
    assert "none_is_dropped" not in second
    assert [r["event"] for r in log.read(since=second["time"])] == ["restart"]
    assert first["time"] <= second["time"]
    with pytest.raises(ValueError, match="unknown recovery event"):
        log.append("sim", "exploded")


def test_endpoints_publish_atomically_and_wait(tmp_path: Path) -> None:
    assert endpoints.read(tmp_path, "bridge:main") is None
    with pytest.raises(TimeoutError, match="bridge:main published no 'api' endpoint"):
        endpoints.wait_url(tmp_path, "bridge:main", timeout=0.05)
    endpoints.publish(tmp_path, "bridge:main", {"api": "http://127.0.0.1:1234"})
    record = json.loads((tmp_path / "run" / "bridge-main.json").read_text())
    assert record["pid"] == os.getpid() and record["component"] == "bridge:main"
    assert endpoints.url(tmp_path, "bridge:main") == "http://127.0.0.1:1234"
    assert endpoints.wait_url(tmp_path, "bridge:main", timeout=1) == "http://127.0.0.1:1234"
    with pytest.raises(TimeoutError):
        endpoints.wait_url(tmp_path, "bridge:main", timeout=0.05, newer_than_pid=os.getpid())
    endpoints.remove(tmp_path, "bridge:main")
    assert endpoints.url(tmp_path, "bridge:main") is None


def test_notifier_sends_a_status_only_when_it_changed(notify_socket: socket.socket) -> None:
    address = "@" + notify_socket.getsockname()[1:].decode()
    code = ("from watchdog.shared.notify import Notifier; n = Notifier(); "
            "n.status('a'); n.status('a'); n.status('b'); n.heartbeat()")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=30,
                   env={**os.environ, "NOTIFY_SOCKET": address})
    assert [notify_socket.recv(4096).decode() for _ in range(3)] == ["STATUS=a", "STATUS=b", "WATCHDOG=1"]


def test_heartbeat_interval_follows_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    from watchdog.shared.notify import heartbeat_interval
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert heartbeat_interval(5.0) == 2.5
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    assert heartbeat_interval(5.0) == 1.5


def test_the_import_package_watchdog_is_ours_and_the_pypi_one_is_not_installed() -> None:
    import importlib.metadata

    import watchdog
    assert Path(watchdog.__file__).resolve().parent == ROOT / "watchdog"
    installed = {dist.metadata["Name"].lower() for dist in importlib.metadata.distributions()}
    assert "watchdog" not in installed, "the unrelated PyPI package 'watchdog' would shadow ours"
    assert "wa-watchdog" in installed
