"""The watchdog's small pieces on their own: protocol parsing, health classification, output, transitions."""
from __future__ import annotations

import asyncio
import os
import re
import select
import time
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import pytest

from bridge.supervision import classify
from watchdog.core import probes
from watchdog.core.child import child_env, exit_cause
from watchdog.core.child_output import ChildOutput, RotatingFile
from watchdog.shared.logs import StderrSink
from watchdog.components import load
from watchdog.shared.config import ConfigError
from watchdog.shared.logs import line_time
from watchdog.core.notify_server import parse
from watchdog.core.stale import runs
from watchdog.core.systemd_heartbeat import watchdog_interval
from watchdog.shared import clock


def test_notify_datagrams_are_parsed_like_systemd_does() -> None:
    note = parse("READY=1\nSTATUS=monitors 6/6 ready · 2 restarts\nWATCHDOG=1\nX_UNKNOWN=3".encode(), sender=42)
    assert note.ready and note.watchdog and not note.stopping and note.sender == 42
    assert note.status == "monitors 6/6 ready · 2 restarts"
    assert parse(b"STOPPING=1").stopping
    assert not parse(b"READY=0\nnonsense\xff").ready


def test_health_answers_are_classified_outage_operator_or_failure() -> None:
    ok = classify(200, {"state": "connected"})
    assert ok.kind == probes.OK
    started = datetime(2026, 11, 24, 22, 31, 27, 123456, tzinfo=timezone.utc).timestamp()
    for text in ("2026-11-24T22:31:27.123456+00:00", "2026-11-24 22:31:27.123456+00:00"):
        outage = classify(503, {"state": "disconnected", "reason": "server closed",
                                       "open_window": {"started_at": text}})
        assert outage.kind == probes.OUTAGE and outage.outage_started_at == pytest.approx(started)
    assert classify(503, {"state": "connecting", "open_window": None}).kind == probes.OUTAGE
    assert classify(503, {"state": "stream_replaced"}).kind == probes.OPERATOR
    assert classify(503, {"state": "logged_out"}).kind == probes.OPERATOR
    assert classify(503, {"state": "store_error"}).kind == probes.OUTAGE  # a live loop: no restart
    assert classify(500, None).kind == probes.FAILURE


def test_a_refused_connection_is_a_failure_not_an_exception() -> None:
    async def probe() -> probes.HealthResult:
        async with aiohttp.ClientSession() as session:
            return await probes.probe_http(session, "http://127.0.0.1:1/", 0.5, probes.expect_status(200))
    result = asyncio.run(probe())
    assert result.kind == probes.FAILURE and result.state == "connection refused"


def test_exit_causes_name_the_signal_or_the_code() -> None:
    assert exit_cause(-9) == {"cause": "SIGKILL", "signal": "SIGKILL"}
    assert exit_cause(1) == {"cause": "exit code 1", "exit_code": 1}


def test_child_environment_drops_systemds_variables_and_adds_its_own() -> None:
    env = child_env("@wa-watchdog/1/sim", 2.5, {"PATH": "/bin", "NOTIFY_SOCKET": "/run/x", "WATCHDOG_PID": "7",
                                                "WATCHDOG_USEC": "1"})
    assert env["PATH"] == "/bin" and env["NOTIFY_SOCKET"] == "@wa-watchdog/1/sim"
    assert env["WATCHDOG_USEC"] == "2500000" and "WATCHDOG_PID" not in env


def test_leftover_processes_are_recognised_by_their_command_line() -> None:
    signature = (("bridge",), ("--account", "main"))
    assert runs(["python", "-m", "watchdog.cli", "bridge", "--config", "c", "--account", "main"], signature)
    assert not runs(["python", "-m", "watchdog.cli", "bridge", "--account", "other"], signature)
    assert not runs(["python", "-m", "watchdog.cli", "monitor", "--account", "main"], signature)


def test_systemd_interval_is_half_of_watchdog_usec_for_this_pid_only() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "10000000"}) == 5.0
    assert watchdog_interval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}) == 5.0
    assert watchdog_interval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({}) is None


def test_child_log_file_rotates_by_size(tmp_path: Path) -> None:
    log = RotatingFile(tmp_path / "logs" / "bridge-main.log", max_bytes=100, keep=3)
    for i in range(40):
        log.write(f"line {i:03d} of the bridge\n".encode())
    log.close()
    files = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert files == ["bridge-main.log", "bridge-main.log.1", "bridge-main.log.2", "bridge-main.log.3"]
    assert all((tmp_path / "logs" / name).stat().st_size <= 100 for name in files)
    assert "line 039" in (tmp_path / "logs" / "bridge-main.log").read_text()


def test_stderr_sink_drops_instead_of_blocking_when_the_reader_is_gone() -> None:
    read_end, write_end = os.pipe()
    try:
        sink = StderrSink(write_end)
        started = time.monotonic()
        for _ in range(100):
            sink.write(b"x" * 4000 + b"\n")  # 400 kB into a 64 kB pipe nobody reads
        assert time.monotonic() - started < 2 and sink.dropped_bytes > 0
        _drain(read_end)  # the reader catches up
        sink.write(b"after\n")
        assert sink.dropped_bytes == 0
        assert _drain(read_end).endswith(b"bytes of output dropped, stderr was full]\nafter\n")
    finally:
        os.close(read_end)
        os.close(write_end)


def _pending(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def _drain(fd: int) -> bytes:
    data = b""
    while _pending(fd):
        data += os.read(fd, 65536)
    return data


def test_child_output_lines_are_stamped_and_go_to_stderr_and_the_log(tmp_path: Path) -> None:
    sink_read, sink_write = os.pipe()
    child_read, child_write = os.pipe()
    formatted = "2026-12-01 09:13:01.123 bridge:main[4321] INFO    connected"

    async def scenario() -> None:
        output = ChildOutput("bridge:main", RotatingFile(tmp_path / "bridge-main.log", 10_000), StderrSink(sink_write))
        output.attach(child_read, 4321)
        os.write(child_write, b"first line\nsecond ")
        os.write(child_write, f"line\n{formatted}\nunterminated".encode())
        os.close(child_write)  # EOF: the partial last line is still passed on
        deadline = time.monotonic() + 5
        while output._fd is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        output.close()

    asyncio.run(scenario())
    copied = _drain(sink_read).decode().splitlines()
    assert copied == (tmp_path / "bridge-main.log").read_text().splitlines()
    assert [re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} ", "", line) for line in copied] == [
        "bridge:main[4321] first line", "bridge:main[4321] second line", "bridge:main[4321] INFO    connected",
        "bridge:main[4321] unterminated"]
    assert copied[2] == formatted  # a line already in the format (the child's loguru) passes unchanged
    assert all(abs(line_time(line) - clock.now_s()) < 60 for line in copied if line != formatted)
    os.close(sink_read)
    os.close(sink_write)


@pytest.mark.parametrize(("section", "key"), [
    ("[watchdog]\nbackoff_max = 0.01\n", "watchdog.backoff_max"),
    ("[watchdog]\ncrash_loop_exits = 0\n", "watchdog.crash_loop_exits"),
    ("[watchdog]\nterm_grace = -1\n", "watchdog.term_grace"),
    ("[accounts.main.probe]\nperiod = 0\n", "accounts.main.probe.period"),
    ("[accounts.main]\nwatchdog_sec = -1\n", "accounts.main.watchdog_sec"),
])
def test_bad_supervision_knobs_are_config_errors_naming_the_key(tmp_path: Path, section: str, key: str) -> None:
    account = '[accounts.main]\nphone = "27710000000"\ntransport = "neonize"\n'
    if section.startswith("[accounts.main]"):
        text = section.replace("[accounts.main]\n", account)
    else:
        text = account + section
    path = tmp_path / "wa.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load(path)


def test_watchdog_sec_0_means_no_heartbeat_is_expected() -> None:
    assert "WATCHDOG_USEC" not in child_env("@x", 0.0, {"WATCHDOG_USEC": "5"})


def test_a_replaced_childs_unread_output_is_passed_on_not_dropped(tmp_path: Path) -> None:
    sink_read, sink_write = os.pipe()
    old_read, old_write = os.pipe()
    new_read, new_write = os.pipe()

    async def scenario() -> None:
        output = ChildOutput("monitor:a", RotatingFile(tmp_path / "monitor-a.log", 10_000), StderrSink(sink_write))
        output.attach(old_read, 11)
        os.write(old_write, b"Traceback (most recent call last):\nValueError: boom\n")
        output.attach(new_read, 12)  # restarted before the loop got round to reading the old pipe
        output.close()

    asyncio.run(scenario())
    assert [line.split(" ", 2)[2] for line in _drain(sink_read).decode().splitlines()] == [
        "monitor:a[11] Traceback (most recent call last):", "monitor:a[11] ValueError: boom"]
    for fd in (sink_read, sink_write, old_write, new_write):
        os.close(fd)
