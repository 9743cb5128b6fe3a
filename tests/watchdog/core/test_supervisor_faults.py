"""The supervisor never stalls what it supervises, nor is it turned against it: a whole system under
`wa-watchdog run` with the watchdog paused (SIGSTOP) while drops are posted, and with a local user holding
every public connection slot of the bridge's API with half-sent request headers."""
from __future__ import annotations

import os
import selectors
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from scripts.benchmarks.chaos_traffic import Injector
from scripts.benchmarks.system_run import RunningSystem, config_text, slow_start
from tests.conftest import wait_until
from watchdog.shared.http_server import MAX_CONNECTIONS
from watchdog.shared.recovery_log import RecoveryLog

PROJECTS = 2
PAUSE = 12.0  # seconds the watchdog is stopped: twice the 6 s after which a blocked bridge lost WhatsApp


@contextmanager
def running(tmp_path: Path) -> Iterator[RunningSystem]:
    system = RunningSystem(tmp_path, slow_start(config_text(PROJECTS, probe_period=0.5)))
    try:
        system.start()
        yield system
    finally:
        assert system.stop() == 0


def pids(system: RunningSystem) -> dict[str, int]:
    return {c["name"]: c["pid"] for c in system.status()}


def recovery_records(system: RunningSystem, *events: str) -> list[dict]:
    return [r for r in RecoveryLog(system.data_dir / "recoveries.jsonl").read() if r["event"] in events]


def stored(system: RunningSystem, drops: list[str]) -> bool:
    """Every one of `drops` is in the bridge's messages.db."""
    if not drops:
        return True
    marks = " OR ".join("content LIKE ?" for _ in drops)
    found = system.query("messages", f"SELECT COUNT(*) FROM messages WHERE {marks}", *(f"{d} %" for d in drops))
    return found == [(len(drops),)]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_paused_watchdog_stalls_no_child_and_judges_none_by_the_time_it_did_not_watch(tmp_path: Path) -> None:
    with running(tmp_path) as system:
        before = pids(system)
        injector = Injector(system, PROJECTS, rate=5)
        injector.start()
        try:
            wait_until(lambda: len(injector.posts) >= 5 and stored(system, [p.drop for p in injector.posts]), 15,
                       message="drops stored before the pause")
            os.kill(system.proc.pid, signal.SIGSTOP)
            paused = time.monotonic()
            try:
                # Posted late in the pause (after the 6 s that used to freeze the bridge): stored while it lasts.
                wait_until(lambda: time.monotonic() - paused >= PAUSE - 2, PAUSE, message="the pause to go on")
                late = [p.drop for p in injector.posts[-5:]]
                wait_until(lambda: stored(system, late), 2, message=f"{late}, posted late in the pause, stored")
                assert time.monotonic() - paused < PAUSE
                wait_until(lambda: time.monotonic() - paused >= PAUSE, 2, message="the end of the pause")
            finally:
                os.kill(system.proc.pid, signal.SIGCONT)
            wait_until(lambda: len(injector.posts) >= 5 * PAUSE + 20, 20, message="drops posted after the pause")
        finally:
            injector.halt.set()
            injector.join()
        posted = {p.drop for p in injector.posts}
        wait_until(lambda: system.query("drops", "SELECT COUNT(*) FROM drops") == [(len(posted),)], 30,
                   message=f"all {len(posted)} drops recorded")
        assert {d for (d,) in system.query("drops", "SELECT drop_number FROM drops")} == posted
        assert pids(system) == before and all(c["restarts"] == 0 for c in system.status())
        assert recovery_records(system, "hang", "unhealthy", "exit") == []
        (gap,) = recovery_records(system, "loop_gap")
        assert PAUSE - 1 < gap["gap_s"] < PAUSE + 5


class HalfHeaders(threading.Thread):
    """A noisy local user: keeps `count` connections open to host:port, each having sent half a request header;
    one the server closes (shed, or its header time up) is opened again."""

    HALF = b"GET /api/health HTTP/1.1\r\nHost: 127.0"

    def __init__(self, host: str, port: int, count: int) -> None:
        super().__init__(daemon=True)
        self.address = (host, port)
        self.count = count
        self.halt = threading.Event()
        self.opened = 0

    def run(self) -> None:
        selector = selectors.DefaultSelector()
        try:
            while not self.halt.is_set():
                while len(selector.get_map()) < self.count:
                    connection = socket.create_connection(self.address, timeout=5)
                    connection.sendall(self.HALF)
                    selector.register(connection, selectors.EVENT_READ)
                    self.opened += 1
                for key, _ in selector.select(0.1):  # an answer (the 503) or EOF: the server closed it
                    selector.unregister(key.fileobj)
                    key.fileobj.close()  # type: ignore[union-attr]
        finally:
            for key in list(selector.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]
            selector.close()


def public_health(url: str) -> int:
    try:
        with urllib.request.urlopen(f"{url}/api/health", timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_half_sent_requests_on_every_public_slot_do_not_make_the_watchdog_restart_the_bridge(tmp_path: Path) -> None:
    with running(tmp_path) as system:
        bridge = next(c for c in system.status() if c["name"] == "bridge:main")
        url = bridge["endpoints"]["api"]
        split = urlsplit(url)
        noise = HalfHeaders(split.hostname or "", split.port or 0, MAX_CONNECTIONS + 44)
        noise.start()
        try:
            wait_until(lambda: public_health(url) == 503, 15, message="the public API shedding with 503")
            # The watchdog's probe keeps being answered meanwhile: each answer is a new one (its age moves on).
            ages: set[float] = set()

            def answered() -> bool:
                component = next(c for c in system.status() if c["name"] == "bridge:main")
                assert component["pid"] == bridge["pid"] and component["restarts"] == 0, component
                ages.add(component["connection"]["last_event_age_s"])
                return len(ages) >= 12  # 12 probe answers at a 0.5 s period: 4 times failure_threshold 3
            wait_until(answered, 30, interval=0.25, message="the probe answered through the flood")
            assert public_health(url) == 503, "the public slots were no longer all taken"
        finally:
            noise.halt.set()
            noise.join()
        assert noise.opened > MAX_CONNECTIONS
        wait_until(lambda: public_health(url) == 200, 15, message="the public API answering again")
        assert recovery_records(system, "hang", "unhealthy", "exit", "restart") == []
