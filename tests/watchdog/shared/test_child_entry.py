"""ChildEntry in a real child process: real SIGTERM/SIGINT, a real sd_notify socket, what arrives in what order."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import ROOT

# A child that lives as the components do: READY=1 after "starting", beats with a status that changes on
# stdin input, stops on a signal, then reports on stdout what it saw.
CHILD = """
import asyncio, sys
from watchdog.shared.child_entry import ChildEntry

async def main() -> int:
    state = {"status": "starting", "ticks": 0, "woken": 0}
    changed = asyncio.Event()
    def tick() -> None:
        state["ticks"] += 1
    def woken() -> None:
        state["woken"] += 1
    entry = ChildEntry(float(sys.argv[1]), lambda: state["status"], tick=tick, max_period=float(sys.argv[2]),
                       status_changed=changed, status_gap=0.05, on_stop=woken)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async def read() -> None:
        while line := await reader.readline():
            state["status"] = line.decode().strip()
            if state["status"] == "up":
                entry.ready()
            changed.set()
            print("took", state["status"], flush=True)

    async with entry:
        entry.start_heartbeat()
        reading = asyncio.create_task(read())
        print("entered", flush=True)
        await entry.stop.wait()
        reading.cancel()
        print("stop", state["woken"], state["ticks"] > 0, flush=True)
    return 3  # the caller's exit code, untouched by the entry

sys.exit(asyncio.run(main()))
"""


@pytest.fixture
def start(notify_socket: socket.socket) -> Iterator[Callable[[float], subprocess.Popen[str]]]:
    """Start the child beating every `max_period` s; any child a failed test left running is killed after it."""
    children: list[subprocess.Popen[str]] = []

    def started(max_period: float) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if k != "WATCHDOG_USEC"}
        env["NOTIFY_SOCKET"] = "@" + notify_socket.getsockname()[1:].decode()
        child = subprocess.Popen([sys.executable, "-c", CHILD, "60", str(max_period)], cwd=ROOT, env=env,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        children.append(child)
        assert child.stdout.readline() == "entered\n"  # type: ignore[union-attr]
        return child

    yield started
    for child in children:
        with child:  # closes the pipes and waits
            if child.poll() is None:
                child.kill()


def _say(child: subprocess.Popen[str], line: str) -> None:
    child.stdin.write(line + "\n")  # type: ignore[union-attr]
    child.stdin.flush()  # type: ignore[union-attr]
    assert child.stdout.readline() == f"took {line}\n"  # type: ignore[union-attr]


def _receive_until(sock: socket.socket, wanted: str) -> list[str]:
    """Datagrams up to and including the first one holding `wanted` (the socket's timeout is the deadline)."""
    received: list[str] = []
    while not received or wanted not in received[-1].split("\n"):
        received.append(sock.recv(4096).decode())
    return received


def _finish(child: subprocess.Popen[str]) -> tuple[int, str]:
    out = child.stdout.read()  # type: ignore[union-attr]
    return child.wait(30), out


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_sets_stop_and_the_child_ends_with_its_own_code_after_stopping(
        start: Callable[[float], subprocess.Popen[str]], notify_socket: socket.socket, signum: int) -> None:
    child = start(0.05)
    _say(child, "up")
    beats = _receive_until(notify_socket, "READY=1")
    assert beats[-1] == "READY=1\nSTATUS=up"
    assert all(beat == "WATCHDOG=1" or beat.startswith("STATUS=") for beat in beats[:-1])  # beating before READY=1
    assert "READY=1" not in "".join(beats[:-1])
    child.send_signal(signum)
    after = _receive_until(notify_socket, "STOPPING=1")
    assert set(after[:-1]) <= {"WATCHDOG=1"}
    code, out = _finish(child)
    assert (code, out) == (3, "stop 1 True\n")  # on_stop ran once, the tick ran; the caller's code, not -15
    notify_socket.settimeout(0.2)
    with pytest.raises(TimeoutError):  # nothing after STOPPING=1: the heartbeat ended with the entry
        notify_socket.recv(4096)


def test_ready_goes_once_and_a_changed_status_goes_at_once_not_at_the_next_beat(
        start: Callable[[float], subprocess.Popen[str]], notify_socket: socket.socket) -> None:
    child = start(30.0)  # beats 30 s apart: only the status event can send quickly
    assert notify_socket.recv(4096) == b"WATCHDOG=1"
    assert notify_socket.recv(4096) == b"STATUS=starting"
    _say(child, "up")
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=up"
    _say(child, "busy")
    assert _receive_until(notify_socket, "STATUS=busy")[-1] == "STATUS=busy"
    _say(child, "up")  # ready() again: no second READY=1
    assert "READY=1" not in "".join(_receive_until(notify_socket, "STATUS=up"))
    child.send_signal(signal.SIGTERM)
    assert _receive_until(notify_socket, "STOPPING=1")[-1] == "STOPPING=1"
    assert _finish(child)[0] == 3


def test_the_period_is_half_of_watchdog_usec_and_capped_by_max_period() -> None:
    code = ("import os\n"
            "from watchdog.shared.child_entry import ChildEntry\n"
            "s = lambda: ''\n"
            "print(ChildEntry(10.0, s).period, ChildEntry(10.0, s, max_period=1.0).period)\n"
            "os.environ['WATCHDOG_USEC'] = '4000000'\n"
            "print(ChildEntry(10.0, s).period)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_USEC", "NOTIFY_SOCKET")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=30, capture_output=True,
                         text=True).stdout
    assert out.split() == ["5.0", "1.0", "2.0"]


def test_importing_the_entry_loads_nothing_heavy() -> None:
    """Every child pays this on every restart: asyncio and the notifier, never aiohttp, psutil or the watchdog."""
    code = ("import sys; import watchdog.shared.child_entry\n"
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('aiohttp', 'psutil', 'tenacity', 'psycopg', 'bridge', 'monitors') or m.startswith('watchdog.') "
            "and not m.startswith('watchdog.shared'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=30, capture_output=True,
                         text=True).stdout
    assert out.strip() == ""
