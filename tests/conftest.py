"""Shared test helpers: a data directory with a config, real child processes ended by pid, deadline waits."""
from __future__ import annotations

import asyncio
import hashlib
import inspect
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from scripts.benchmarks.system_run import wait_for

from tests.pg import PgCluster, find_bin_dir
from watchdog.shared import clock

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")

GROUP_A = "120363000000000001@g.us"
GROUP_B = "120363000000000002@g.us"
GROUP_C = "120363000000000003@g.us"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files with the most slow tests first; each file's tests stay together and in order. scripts/test hands
    whole files to its workers in this order (--dist loadfile --no-loadscope-reorder): the long files are shared
    out first and the quick ones even out the end, so no worker is left running one long file (xdist's own
    order, by number of tests, put the few-test long ones such as the chaos runs last)."""
    slow = Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])  # stable


@pytest.fixture
def notify_socket() -> Iterator[socket.socket]:
    """A receiving sd_notify socket (abstract name); pass `"@" + name` as a child's NOTIFY_SOCKET."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(f"\0wa-watchdog-test/{os.getpid()}/{id(sock)}")
    sock.settimeout(5)
    yield sock
    sock.close()


def wait_until(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.02,
               message: str = "condition") -> T:
    """Poll `condition` until it returns something truthy; fail the test with `message` at the deadline.

    The loop is the benchmarks' `wait_for` (one implementation); a test fails with AssertionError.
    """
    try:
        return wait_for(condition, timeout, message, interval)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


async def until(condition: Callable[[], object], timeout: float = 10.0, message: str = "condition",
                interval: float = 0.02) -> Any:
    """wait_until for tests that run an event loop: the loop keeps running meanwhile (a blocking wait would
    stop the very arbiter, transport or server being waited for). `condition` may return an awaitable."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {message}")
        await asyncio.sleep(interval)


# Tests send at once: the account's pace (bridge/pace.py; its defaults spread messages over minutes) is off in the
# test configs, and the pacing tests set their own small pace.
PACE_OFF = "pace = { per_minute = 0, per_hour = 0, per_day = 0, reactions_per_minute = 0, chat_gap_s = 0, chat_jitter_s = 0, typing = false, ramp_s = 0 }"

# The suite's projects acknowledge each drop with its own message (the template), at once: most tests count
# acknowledgements as messages in the group. The product's defaults, a reaction and coalesced message acks, are
# tested in tests/monitors/test_feedback_ack.py.
MESSAGE_ACK = 'feedback = { ack = "message", coalesce_s = 0 }'
BASE_CONFIG = f"""
data_dir = "data"

[watchdog]
control_port = 0

[sim]
port = 0

[[sim.groups]]
jid = "{GROUP_A}"
name = "Lawley Fibre"
participants = ["27710000001", "27710000002"]

[[sim.groups]]
jid = "{GROUP_B}"
name = "Mohadin Fibre"
participants = ["27710000003"]

[[sim.groups]]
jid = "{GROUP_C}"
name = "Velo Test"
participants = ["27710000004"]

[accounts.main]
transport = "sim"
phone = "27710000000"
api_port = 0
watchdog_sec = 3.0
{PACE_OFF}

[accounts.main.probe]
initial_delay = 1.0

[[projects]]
name = "lawley"
groups = ["{GROUP_A}"]
{MESSAGE_ACK}

[[projects]]
name = "mohadin"
groups = ["{GROUP_B}"]
{MESSAGE_ACK}
"""


class Processes:
    """Starts `wa-watchdog` subcommands as real child processes and ends exactly those, by pid."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.started: list[subprocess.Popen] = []

    def start(self, *args: str, env: dict[str, str] | None = None, **popen: object) -> subprocess.Popen:
        child_env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_SOCKET", "WATCHDOG_"))}
        child_env.update(env or {})
        popen.setdefault("stdout", subprocess.PIPE)
        popen.setdefault("stderr", subprocess.PIPE)
        proc = subprocess.Popen([sys.executable, "-m", "watchdog.cli", args[0], "--config", str(self.config_path),
                                 *args[1:]], cwd=ROOT, env=child_env, start_new_session=True, **popen)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGCONT)
                    proc.terminate()
                    proc.wait(timeout=10)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    proc.kill()
                    proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()


@pytest.fixture
def fixed_clock() -> Iterator[Callable[[datetime | float | None], None]]:
    """Fix the time of day of this process (watchdog.shared.clock): what the stores stamp and what they compare
    with is then the time the test set, whatever the date the suite runs on. Let it run again afterwards."""
    yield clock.set_for_tests
    clock.set_for_tests(None)


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    """Write a config file (BASE_CONFIG by default) into tmp_path; returns its path."""
    def write(text: str = BASE_CONFIG, name: str = "wa.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path
    return write


@pytest.fixture
def config_path(write_config: Callable[[str], Path]) -> Path:
    return write_config()


@pytest.fixture
def data_dir(config_path: Path) -> Path:
    return config_path.parent / "data"


@pytest.fixture
def procs(config_path: Path) -> Iterator[Processes]:
    processes = Processes(config_path)
    yield processes
    processes.stop_all()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One throwaway PostgreSQL server for the test session (skipped, with the reason, without the binaries)."""
    bin_dir, why = find_bin_dir()
    if bin_dir is None:
        pytest.skip(why)
    cluster = PgCluster(bin_dir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pg_url(pg_cluster: PgCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database for this test: its URL. A test that stopped the server leaves it running again."""
    yield pg_cluster.create_database("t_" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:20])
    if not pg_cluster.running():
        pg_cluster.start()


@pytest.fixture(params=["sqlite", "postgres"])
def drops_backend(request: pytest.FixtureRequest) -> str:
    """Config text that puts the drops store on the backend under test: "" (drops.db) or a [database] table."""
    if request.param == "sqlite":
        return ""
    return f'\n[database]\nurl = "{request.getfixturevalue("pg_url")}"\n'
