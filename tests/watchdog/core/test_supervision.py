"""The arbiter and its watchers supervising real child processes (tests/children/worker.py) with real signals.

Each test runs the arbiter in this process on a fresh event loop, with
components whose command is the test worker, and reads what happened from the
recovery log, the watchers' state and (for alerts) a real webhook receiver.
"""
from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, TypeVar

import pytest
from aiohttp import web

from tests.conftest import ROOT, until, wait_until
from tests.watchdog.fakes import RecordingAlerts
from watchdog.core.arbiter import Arbiter
from watchdog.components import load
from watchdog.shared.notify import Notifier
from watchdog.core.systemd_heartbeat import SystemdHeartbeat
from watchdog.shared.programs import OWN_NO_RESTART_EXITS, Check, Program
from watchdog.core.states import State
from watchdog.shared import clock

FAILED, RUNNING, STOPPED = State.FAILED, State.RUNNING, State.STOPPED

T = TypeVar("T")
WORKER = ROOT / "tests" / "children" / "worker.py"

WATCHDOG_SETTINGS = {"term_grace": 0.5, "stop_timeout": 3.0, "backoff_initial": 0.05, "backoff_max": 0.4,
                     "backoff_reset_after": 60.0, "crash_loop_exits": 5, "crash_loop_window": 30.0}


def write_settings(tmp_path: Path, webhook: str | None = None, **watchdog: float) -> Path:
    """A config with fast [watchdog] timings (overridable), one account and optionally a json webhook."""
    settings = "\n".join(f"{key} = {value}" for key, value in {**WATCHDOG_SETTINGS, **watchdog}.items())
    alerts = f'\n[[alerts]]\nurl = "{webhook}"\nformat = "json"\n' if webhook else ""
    path = tmp_path / "wa.toml"
    path.write_text(f'data_dir = "data"\n\n[watchdog]\n{settings}\n\n[accounts.main]\nphone = "27710000000"\n'
                    f'transport = "neonize"\n{alerts}', encoding="utf-8")
    return path


def worker(name: str, *options: str, after: tuple[str, ...] = (), watchdog_sec: float = 1.0, rss_limit_mb: int = 0,
           pidfile: Path | None = None, signature: tuple[tuple[str, ...], ...] = (),
           no_restart_exit_codes: tuple[int, ...] = OWN_NO_RESTART_EXITS, **program: object) -> Program:
    """The test worker as a program that says READY=1 and heartbeats, with our components' no-restart codes."""
    return Program(name, (sys.executable, str(WORKER), "--label", name, *options), after=after, ready=Check("notify"),
                   watchdog_sec=watchdog_sec, rss_limit_mb=rss_limit_mb, no_restart_exit_codes=no_restart_exit_codes,
                   pidfile=pidfile, signature=signature, **program)


class Supervised:
    def __init__(self, arbiter: Arbiter, task: asyncio.Task) -> None:
        self.arbiter = arbiter
        self.task = task

    def records(self, component: str | None = None, event: str | None = None) -> list[dict]:
        return [r for r in self.arbiter.recovery_log.read()
                if (component is None or r["component"] == component) and (event is None or r["event"] == event)]

    def watcher(self, name: str):
        return self.arbiter.watchers[name]

    async def running(self, name: str, timeout: float = 10.0) -> int:
        """Wait until the component is RUNNING (ready / healthy); returns its pid."""
        watcher = self.watcher(name)
        await until(lambda: watcher.state == RUNNING and watcher.healthy, timeout, f"{name} running")
        assert watcher.pid is not None
        return watcher.pid

    async def record(self, component: str, event: str, count: int = 1, timeout: float = 10.0) -> list[dict]:
        return await until(lambda: len(found := self.records(component, event)) >= count and found, timeout,
                           f"{count} {event} record(s) for {component}")


@asynccontextmanager
async def supervise(config_path: Path, components: list[Program], alerts: RecordingAlerts | None = None,
                    systemd: SystemdHeartbeat | None = None, webhooks: bool = False) -> AsyncIterator[Supervised]:
    """Run an arbiter over `components`; alerts go to a recorder unless `webhooks` (the real AlertManager)."""
    arbiter = Arbiter(load(config_path), components, alerts=None if webhooks else alerts or RecordingAlerts(),
                      systemd=systemd)
    task = asyncio.get_running_loop().create_task(arbiter.run())
    supervised = Supervised(arbiter, task)
    try:
        await until(lambda: arbiter.control_url or task.done(), 10, "the arbiter to start")
        yield supervised
    finally:
        if not task.done():
            arbiter.request_stop()
        assert await asyncio.wait_for(task, 30) == 0


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


@asynccontextmanager
async def webhook_receiver() -> AsyncIterator[tuple[str, list[dict]]]:
    """A real aiohttp server on 127.0.0.1:0 that keeps every JSON alert posted to it."""
    received: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}/hook", received
    finally:
        await runner.cleanup()


# -- exits -------------------------------------------------------------------------


def test_sigkill_is_detected_at_once_restarted_and_logged_with_a_healthy_record(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with supervise(write_settings(tmp_path), [worker("monitor:a")]) as s:
            old = await s.running("monitor:a")
            killed_at = clock.now_s()
            os.kill(old, signal.SIGKILL)
            (healthy,) = await s.record("monitor:a", "healthy")
            (exit_,) = s.records("monitor:a", "exit")
            (restart,) = s.records("monitor:a", "restart")
            assert exit_["cause"] == "SIGKILL" and exit_["signal"] == "SIGKILL" and exit_["pid"] == old
            assert exit_["time"] - killed_at < 0.5, "the exit was not seen at once"  # written after the restart
            assert restart["pid"] == old and restart["new_pid"] != old and restart["cause"] == "SIGKILL"
            assert restart["delay_ms"] == 0 and restart["restart_ms"] < 250, restart
            assert healthy["pid"] == restart["new_pid"] and 0 < healthy["downtime_ms"] < 5000
            assert s.watcher("monitor:a").pid == restart["new_pid"]
            assert s.watcher("monitor:a").restart_count == 1
    run(scenario)


def test_non_zero_exit_is_restarted_with_its_exit_code_as_cause(tmp_path: Path) -> None:
    async def scenario() -> None:
        once = tmp_path / "exited-once"
        async with supervise(write_settings(tmp_path),
                             [worker("monitor:a", "--exit-after", "0.1", "--code", "1", "--once-marker", str(once))]) as s:
            (healthy,) = await s.record("monitor:a", "healthy")
            (exit_,) = s.records("monitor:a", "exit")
            assert exit_["cause"] == "exit code 1" and exit_["exit_code"] == 1
            (restart,) = s.records("monitor:a", "restart")
            assert restart["cause"] == "exit code 1" and restart["delay_ms"] == 0
            assert healthy["pid"] == restart["new_pid"]
            assert s.watcher("monitor:a").last_cause == "exit code 1"
    run(scenario)


# -- hangs and limits ---------------------------------------------------------------


@pytest.mark.slow
def test_sigstop_hang_of_any_program_is_caught_by_the_process_state_check_and_restarted(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with supervise(write_settings(tmp_path), [worker("bridge:main")]) as s:
            old = await s.running("bridge:main")
            stopped_at = time.monotonic()
            os.kill(old, signal.SIGSTOP)
            (healthy,) = await s.record("bridge:main", "healthy")
            (hang,) = s.records("bridge:main", "hang")
            assert hang["pid"] == old and "process is stopped (SIGSTOP)" in hang["cause"]
            assert time.monotonic() - stopped_at < 5
            (exit_,) = s.records("bridge:main", "exit")
            assert exit_["pid"] == old and exit_["cause"] == "SIGTERM"  # SIGTERM + SIGCONT ends a frozen child
            (restart,) = s.records("bridge:main", "restart")
            assert restart["pid"] == old and restart["cause"] == hang["cause"]
            assert healthy["pid"] == restart["new_pid"]
    run(scenario)


@pytest.mark.slow
def test_child_that_stops_heartbeating_and_ignores_sigterm_is_killed_after_term_grace(tmp_path: Path) -> None:
    async def scenario() -> None:
        alerts = RecordingAlerts()
        async with supervise(write_settings(tmp_path),
                             [worker("monitor:a", "--silent-after", "0.2", "--ignore-term")], alerts=alerts) as s:
            old = await s.running("monitor:a")
            (hang,) = await s.record("monitor:a", "hang")
            (exit_,) = await s.record("monitor:a", "exit")
            assert hang["pid"] == exit_["pid"] == old and "missed heartbeat" in hang["cause"]
            assert exit_["cause"] == "SIGKILL"
            assert exit_["time"] - hang["time"] >= 0.4  # term_grace = 0.5 s between SIGTERM and SIGKILL
            (restart, *_) = await s.record("monitor:a", "restart")
            assert restart["pid"] == old and restart["cause"] == hang["cause"]
            assert ("hang", "monitor:a") in [(rule, name) for rule, name, _, _ in alerts.fired]
    run(scenario)


@pytest.mark.slow
def test_child_over_its_memory_limit_is_restarted_as_rss_limit(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with supervise(write_settings(tmp_path),
                             [worker("monitor:a", "--grow-mb", "120", rss_limit_mb=80, watchdog_sec=5.0)]) as s:
            (event,) = await s.record("monitor:a", "rss_limit")
            assert "rss_limit_mb 80" in event["cause"] and "resident memory" in event["cause"]
            (restart, *_) = await s.record("monitor:a", "restart")
            assert restart["pid"] == event["pid"] and restart["cause"] == event["cause"]
    run(scenario)


@pytest.mark.slow
def test_memory_of_the_childs_own_children_counts_towards_its_limit(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with supervise(write_settings(tmp_path),
                             [worker("monitor:a", "--child-grow-mb", "120", rss_limit_mb=80, watchdog_sec=5.0)]) as s:
            (event,) = await s.record("monitor:a", "rss_limit")
            assert "rss_limit_mb 80" in event["cause"]
    run(scenario)


# -- backoff, crash loops, failures ----------------------------------------------------


@pytest.mark.slow
def test_crash_loop_backs_off_exponentially_up_to_the_cap_and_alerts_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with webhook_receiver() as (url, received):
            config = write_settings(tmp_path, webhook=url)
            async with supervise(config, [worker("monitor:a", "--exit-after", "0", "--code", "1")],
                                 webhooks=True) as s:
                restarts = await s.record("monitor:a", "restart", count=8, timeout=20)
                await until(lambda: received, 10, "the crash_loop alert at the webhook")
                delays = [r["delay_ms"] / 1000 for r in restarts]
                # 1st restart immediate, then graduated steps (0.05 * 2^(n-1) + jitter <= 0.05), capped at
                # backoff_max (reached here by the steps; the crash loop itself does not jump to it).
                assert delays[0] == 0
                for n, delay in enumerate(delays[1:4], start=1):
                    low = 0.05 * 2 ** (n - 1)
                    assert low <= delay <= min(low + 0.05, 0.4) + 1e-6, (n, delays)
                assert all(abs(d - 0.4) < 1e-6 for d in delays[4:]), delays
                assert max(delays) <= 0.4 + 1e-6
                (loop,) = s.records("monitor:a", "crash_loop")
                assert loop["cause"] == "5 exits in 30 s" and loop["backoff_s"] == 0.4
                assert s.watcher("monitor:a").state != FAILED  # it never gives up
            firing = [a for a in received if a.get("rule") == "crash_loop" and a.get("status") == "firing"]
            assert len(firing) == 1 and firing[0]["component"] == "monitor:a", received
    run(scenario)


@pytest.mark.slow
def test_backoff_resets_after_the_component_was_healthy_long_enough(tmp_path: Path) -> None:
    async def scenario() -> None:
        config = write_settings(tmp_path, backoff_reset_after=0.2)
        async with supervise(config, [worker("monitor:a", "--exit-after", "0.5", "--code", "1")]) as s:
            restarts = await s.record("monitor:a", "restart", count=4, timeout=20)
            assert [r["delay_ms"] for r in restarts] == [0, 0, 0, 0]
            assert not s.records("monitor:a", "crash_loop")
    run(scenario)


@pytest.mark.parametrize(("code", "rule", "hooks"), [(2, "config_failed", ""), (4, "needs_operator", ""),
                                                     (4, "not_paired", "bridge.supervision:hooks")])
def test_exit_code_2_or_4_is_failed_not_restarted_and_alerted_once(tmp_path: Path, code: int, rule: str,
                                                                   hooks: str) -> None:
    """Alerted in the program's words: the core's, or its hooks' (the bridge: exit 4 is `not_paired`)."""
    async def scenario() -> None:
        async with webhook_receiver() as (url, received):
            async with supervise(write_settings(tmp_path, webhook=url),
                                 [worker("monitor:a", "--exit-after", "0", "--code", str(code), hooks=hooks)],
                                 webhooks=True) as s:
                (failed,) = await s.record("monitor:a", "failed")
                watcher = s.watcher("monitor:a")
                assert watcher.state == FAILED and watcher.pid is None
                assert f"exit code {code}" in failed["cause"]
                await until(lambda: received, 10, f"the {rule} alert at the webhook")
                assert not s.records("monitor:a", "restart")  # a restart would have followed the exit at once
                assert [a["rule"] for a in received] == [rule]
                assert s.arbiter.status()[0]["state"] == FAILED
    run(scenario)


# -- stopping, leftovers, operator ------------------------------------------------------


def test_sigterm_stops_monitors_then_bridges_then_the_sim_and_returns_0(tmp_path: Path) -> None:
    async def scenario() -> None:
        order = tmp_path / "terms.txt"
        term = ("--term-log", str(order))
        components = [worker("sim", *term), worker("bridge:main", *term, after=("sim",)),
                      worker("monitor:a", *term, after=("bridge:main",)), worker("monitor:b", *term, after=("bridge:main",))]
        arbiter = Arbiter(load(write_settings(tmp_path)), components, alerts=RecordingAlerts())
        task = asyncio.get_running_loop().create_task(arbiter.run())
        await until(lambda: all(w.state == RUNNING for w in arbiter.watchers.values()) and arbiter.watchers, 10,
                    "every component running")
        pids = [w.pid for w in arbiter.watchers.values()]
        os.kill(os.getpid(), signal.SIGTERM)  # the arbiter's handler, not pytest's, receives it
        assert await asyncio.wait_for(task, 20) == 0
        labels = [line.split()[0] for line in order.read_text().splitlines()]
        assert sorted(labels[:2]) == ["monitor:a", "monitor:b"] and labels[2:] == ["bridge:main", "sim"], labels
        assert all(w.state == STOPPED for w in arbiter.watchers.values())
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        events = [(r["component"], r["event"]) for r in arbiter.recovery_log.read()]
        assert events[-1] == ("watchdog", "stop") and ("sim", "stop") in events
        assert not [e for e in events if e[1] == "exit"]  # a planned stop is not a crash
    run(scenario)


def test_a_child_ending_on_its_own_during_shutdown_is_not_restarted(tmp_path: Path) -> None:
    """systemd's KillMode=control-group signals the children together with us: the sim ends before its turn."""
    async def scenario() -> None:
        components = [worker("sim"), worker("bridge:main", after=("sim",)), worker("monitor:a", after=("bridge:main",))]
        arbiter = Arbiter(load(write_settings(tmp_path)), components, alerts=RecordingAlerts())
        task = asyncio.get_running_loop().create_task(arbiter.run())
        await until(lambda: all(w.state == RUNNING for w in arbiter.watchers.values()) and arbiter.watchers, 10,
                    "every component running")
        sim_pid = arbiter.watchers["sim"].pid
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(sim_pid, signal.SIGTERM)  # as the cgroup-wide SIGTERM does; the stop order reaches the sim last
        assert await asyncio.wait_for(task, 20) == 0
        events = [(r["component"], r["event"]) for r in arbiter.recovery_log.read()]
        # The sim's own ending is a planned stop, never an exit to recover from (a loaded machine may make
        # another worker miss a heartbeat before the stop: that is not what this test is about).
        assert not [e for e in events if e[0] == "sim" and e[1] in ("exit", "restart")], events
        assert ("sim", "stop") in events and all(w.state == STOPPED for w in arbiter.watchers.values())
    run(scenario)


def test_an_earlier_runs_bridge_holding_the_session_is_stopped_before_a_new_bridge_starts(tmp_path: Path) -> None:
    session = tmp_path / "data" / "accounts" / "main" / "session"
    lock = session / "session.lock"
    holder = subprocess.Popen([sys.executable, str(WORKER), "--hold-lock", str(lock), "--label", "holder",
                               "bridge", "--account", "main"], stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: lock.exists() and lock.read_text().strip() == str(holder.pid), message="the holder's lock")

        async def scenario() -> None:
            # The new bridge blocks on the same flock until the holder is gone: it can only become ready after.
            bridge = worker("bridge:main", "--hold-lock", str(lock), "bridge", "--account", "main",
                            pidfile=lock, signature=(("bridge",), ("--account", "main")))
            async with supervise(write_settings(tmp_path), [bridge]) as s:
                new = await s.running("bridge:main")
                assert holder.poll() is not None, "the holder is still alive"
                (stop,) = s.records("bridge:main", "stop")
                assert stop["pid"] == holder.pid and "earlier run" in stop["cause"]
                assert lock.read_text().strip() == str(new)
        run(scenario)
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()


def test_exit_3_session_held_stops_the_holder_then_restarts(tmp_path: Path) -> None:
    session = tmp_path / "data" / "accounts" / "main" / "session"
    session.mkdir(parents=True)
    lock = session / "session.lock"
    # A holder that has not written its pid (yet): the pre-start check cannot see it, so the bridge exits 3.
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(120)",
                               str(lock), "bridge", "--account", "main"], stdout=subprocess.PIPE,
                              start_new_session=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"

        async def scenario() -> None:
            bridge = worker("bridge:main", "--try-lock", str(lock), "bridge", "--account", "main",
                            pidfile=lock, signature=(("bridge",), ("--account", "main")))
            async with supervise(write_settings(tmp_path), [bridge]) as s:
                (exit_, *_) = await s.record("bridge:main", "exit")
                assert exit_["exit_code"] == 3 and s.watcher("bridge:main").state != FAILED
                lock.write_text(f"{holder.pid}\n")  # now the lock names its owner, as a bridge's does
                new = await s.running("bridge:main")
                assert holder.poll() is not None, "the holder is still alive"
                stops = [r for r in s.records("bridge:main", "stop") if r["pid"] == holder.pid]
                assert len(stops) == 1 and lock.read_text().strip() == str(new)
        run(scenario)
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()
        holder.stdout.close()


def test_operator_restart_stops_and_starts_the_component_with_cause_operator_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with supervise(write_settings(tmp_path), [worker("monitor:a"), worker("monitor:b")]) as s:
            old = await s.running("monitor:a")
            other = await s.running("monitor:b")
            answer = await s.arbiter.restart("monitor:a")
            assert answer["old_pid"] == old and answer["pid"] not in (None, old)
            (stop,) = s.records("monitor:a", "stop")
            (restart,) = s.records("monitor:a", "restart")
            assert stop["cause"] == restart["cause"] == "operator restart" and restart["new_pid"] == answer["pid"]
            (healthy,) = await s.record("monitor:a", "healthy")
            assert healthy["pid"] == answer["pid"]
            assert s.watcher("monitor:b").pid == other
            with pytest.raises(KeyError):
                await s.arbiter.restart("monitor:nope")
            status = {c["name"]: c for c in s.arbiter.status()}
            assert status["monitor:a"]["restarts"] == 1 and status["monitor:a"]["last_cause"] == "operator restart"
            assert status["monitor:a"]["pid"] == answer["pid"] and status["monitor:a"]["healthy"] is True
            assert status["monitor:a"]["status_text"] == "monitor:a ready"
    run(scenario)


def test_a_planned_stop_is_dated_when_it_began_not_when_the_child_was_gone(tmp_path: Path) -> None:
    """What the replacement writes while the old process is still closing (a bridge's reconnect, at once with
    a warm standby) must read after the stop that caused it, in `recoveries` and on the console."""
    term_log = tmp_path / "term.log"

    async def scenario() -> None:
        async with supervise(write_settings(tmp_path), [worker("monitor:a", "--term-log", str(term_log),
                                                               "--term-delay", "0.4")]) as s:
            await s.running("monitor:a")
            await s.arbiter.restart("monitor:a")
            (stop,) = await s.record("monitor:a", "stop")
            signalled = int(term_log.read_text().split()[1]) / 1e9  # the worker's time.time_ns() ...
            signalled += clock.now_s() - time.time()  # ... on the product's clock (CI's run a year ahead)
            assert stop["time"] <= signalled  # not 0.4 s later, when the child had exited
            (restart,) = s.records("monitor:a", "restart")
            assert restart["time"] - stop["time"] >= 0.4
    run(scenario)


# -- environment, output, systemd -------------------------------------------------------


def test_child_gets_a_clean_environment_its_own_socket_and_process_group(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "@not-for-children")
    monkeypatch.setenv("WATCHDOG_PID", "1")
    monkeypatch.setenv("WATCHDOG_USEC", "999")
    dump = tmp_path / "env.json"

    async def scenario() -> None:
        async with supervise(write_settings(tmp_path),
                             [worker("monitor:a", "--dump-env", str(dump), watchdog_sec=2.5)]) as s:
            pid = await s.running("monitor:a")
            seen = json.loads(dump.read_text())
            assert seen["pid"] == pid and seen["pgid"] == pid
            assert seen["env"]["NOTIFY_SOCKET"] == f"@wa-watchdog/{os.getpid()}/monitor:a"
            assert seen["env"]["WATCHDOG_USEC"] == "2500000" and "WATCHDOG_PID" not in seen["env"]
            log = tmp_path / "data" / "logs" / "monitor-a.log"
            await until(lambda: log.exists() and f"monitor:a pid {pid} started" in log.read_text(), 5, "the log line")
    run(scenario)


def test_systemd_gets_ready_status_watchdog_pings_and_stopping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    address = f"@wa-watchdog-test/{os.getpid()}/systemd"
    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    systemd.bind("\0" + address[1:])
    systemd.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    received: list[str] = []

    def drain() -> list[str]:
        while True:
            try:
                received.append(systemd.recv(4096).decode("utf-8"))
            except BlockingIOError:
                return received

    async def scenario() -> None:
        heartbeat = SystemdHeartbeat(Notifier(), interval=0.1)
        async with supervise(write_settings(tmp_path), [worker("bridge:main"), worker("monitor:a", group="monitor"),
                                                        worker("monitor:b", "--ready-after", "0.3", group="monitor")],
                             systemd=heartbeat) as s:
            await until(lambda: any("READY=1" in m for m in drain()), 10, "READY=1")
            ready = next(m for m in received if "READY=1" in m)
            # a group is counted; a healthy program with nothing more to say than "ready" is not named
            assert "monitors 2/2 ready" in ready and "·" in ready and "bridge" not in ready
            assert all(w.healthy for w in s.arbiter.watchers.values())  # not before everything was ready
            pings = lambda: sum(m == "WATCHDOG=1" for m in drain())  # noqa: E731
            await until(lambda: pings() >= 3, 5, "WATCHDOG=1 pings")
            os.kill(s.watcher("monitor:a").pid, signal.SIGKILL)
            await s.record("monitor:a", "healthy")
            await until(lambda: any("1 restart in the last hour" in m for m in drain()), 5, "STATUS= with 1 restart")
            assert s.arbiter._cycle() is None
            broken = s.watcher("monitor:b")  # a check that stopped acting: the cycle must withhold WATCHDOG=1
            broken.checks._timers.cancel("heartbeat")
            broken.checks.last_heartbeat -= 100
            assert "monitor:b: heartbeat check overdue" in (s.arbiter._cycle() or "")
        assert "STOPPING=1" in drain()
    try:
        run(scenario)
    finally:
        systemd.close()


# -- the bridge's HTTP probe ------------------------------------------------------------

HEALTH_SERVER = ROOT / "tests" / "children" / "health_server.py"
FAST_PROBE = Check("http", endpoint="api", path="/api/health", period=0.1, timeout=0.3, failure_threshold=3,
                   initial_delay=2.0)  # > a cold start under load


def health_bridge(tmp_path: Path, state_file: Path, watchdog_sec: float = 2.0) -> Program:
    return Program("bridge:main", (sys.executable, str(HEALTH_SERVER), "--data-dir", str(tmp_path / "data"),
                                   "--component", "bridge:main", "--state-file", str(state_file)),
                   ready=FAST_PROBE, liveness=(FAST_PROBE,), watchdog_sec=watchdog_sec, hooks="bridge.supervision:hooks")


def set_health(state_file: Path, status: int, state: str, **extra: object) -> None:
    tmp = state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"status": status, "state": state, **extra}), encoding="utf-8")
    os.replace(tmp, state_file)


@pytest.mark.slow
def test_whatsapp_outage_is_not_restarted_but_alerted_with_its_duration_and_resolved(tmp_path: Path) -> None:
    state_file = tmp_path / "health.json"
    set_health(state_file, 200, "connected")

    async def scenario() -> None:
        alerts = RecordingAlerts()
        async with supervise(write_settings(tmp_path), [health_bridge(tmp_path, state_file)], alerts=alerts) as s:
            pid = await s.running("bridge:main")
            watcher = s.watcher("bridge:main")
            assert watcher.condition == "connected"
            started = "2026-01-01T00:00:00.000000+00:00"
            set_health(state_file, 503, "disconnected", reason="server closed",
                       open_window={"started_at": started, "reason": "server closed"})
            await until(lambda: len([a for a in alerts.fired if a[0] == "disconnect"]) >= 3, 10,
                        "disconnect alerts on every probe")
            assert watcher.condition == "disconnected" and not watcher.healthy and watcher.pid == pid
            duration = [a[3] for a in alerts.fired if a[0] == "disconnect"][-1]
            assert duration is not None and duration > 3600  # measured from open_window.started_at
            set_health(state_file, 200, "connected")
            await until(lambda: watcher.healthy, 5, "reconnected")
            assert [r[0] for r in alerts.resolved] == ["disconnect"]
            set_health(state_file, 503, "stream_replaced", reason="another client took the session")
            await until(lambda: any(a[0] == "stream_replaced" for a in alerts.fired), 5, "stream_replaced alert")
            set_health(state_file, 503, "logged_out")
            await until(lambda: any(a[0] == "logged_out" for a in alerts.fired), 5, "logged_out alert")
            assert watcher.pid == pid and not s.records("bridge:main", "restart")
            assert "bridge main logged_out" in s.arbiter.status_line()
    run(scenario)


@pytest.mark.slow
@pytest.mark.parametrize(("answer", "named"), [({"status": 200, "state": "connected", "delay": 1.0}, "timeout")])
def test_no_answer_makes_the_bridge_unhealthy_and_restarted(tmp_path: Path, answer: dict, named: str) -> None:
    state_file = tmp_path / "health.json"
    set_health(state_file, 200, "connected")

    async def scenario() -> None:
        async with supervise(write_settings(tmp_path), [health_bridge(tmp_path, state_file)]) as s:
            old = await s.running("bridge:main")
            set_health(state_file, **answer)
            (unhealthy,) = await s.record("bridge:main", "unhealthy")
            set_health(state_file, 200, "connected")
            assert unhealthy["pid"] == old and named in unhealthy["cause"] and "3 times" in unhealthy["cause"]
            (healthy,) = await s.record("bridge:main", "healthy")
            (restart,) = s.records("bridge:main", "restart")
            assert restart["pid"] == old and restart["cause"] == unhealthy["cause"]
            assert healthy["pid"] == restart["new_pid"] and s.watcher("bridge:main").condition == "connected"
    run(scenario)


@pytest.mark.slow
def test_a_store_error_from_a_live_loop_is_alerted_not_restarted(tmp_path: Path) -> None:
    """Disk full or the store locked by another program: a restart would fix neither."""
    state_file = tmp_path / "health.json"
    set_health(state_file, 200, "connected")
    alerts = RecordingAlerts()

    async def scenario() -> None:
        async with supervise(write_settings(tmp_path), [health_bridge(tmp_path, state_file)], alerts) as s:
            pid = await s.running("bridge:main")
            set_health(state_file, 503, "store_error", reason="messages.db locked by another process for 3 s")
            await until(lambda: any("locked by another process" in a[2] for a in alerts.fired), 10, "store alert")
            watcher = s.watcher("bridge:main")
            assert watcher.pid == pid and watcher.condition == "store_error"
            assert not s.records("bridge:main", "unhealthy") and not s.records("bridge:main", "restart")
    run(scenario)


@pytest.mark.slow
def test_a_frozen_bridge_is_a_hang_at_the_next_probe_not_after_the_threshold(tmp_path: Path) -> None:
    state_file = tmp_path / "health.json"
    set_health(state_file, 200, "connected")

    async def scenario() -> None:
        # watchdog_sec 30: only the probe can notice within this test
        async with supervise(write_settings(tmp_path), [health_bridge(tmp_path, state_file, 30.0)]) as s:
            old = await s.running("bridge:main")
            os.kill(old, signal.SIGSTOP)
            (hang,) = await s.record("bridge:main", "hang")
            assert hang["pid"] == old and "process is stopped (SIGSTOP)" in hang["cause"]
            (healthy,) = await s.record("bridge:main", "healthy")
            assert healthy["pid"] != old
    run(scenario)


def test_a_second_watchdog_on_the_same_data_directory_refuses_to_start(tmp_path: Path) -> None:
    lock = tmp_path / "data" / "run" / "watchdog.lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write(f"{os.getpid()}\n")  # the holder names itself, as a real watchdog does
        held.flush()
        arbiter = Arbiter(load(write_settings(tmp_path, stop_timeout=0.2, term_grace=0.1)), [worker("monitor:a")],
                          alerts=RecordingAlerts())
        assert asyncio.run(arbiter.run()) == 1
        assert not arbiter.watchers and not (tmp_path / "data" / "run" / "watchdog.json").exists()
