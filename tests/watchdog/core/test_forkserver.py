"""Children forked from the pre-loaded template (watchdog/core/forkserver.py, watchdog/core/template.py), as real processes.

Each test runs a ForkServer on a fresh event loop in this process (which so
becomes a child subreaper, as the watchdog does) and spawns real components
through ChildProcess.spawn: a monitor waiting for a store that does not
exist yet heartbeats over its NOTIFY_SOCKET and logs, which is all a test
needs to see from it.
"""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil
import pytest

from bridge.forking import STANDBY_REASON
from scripts.benchmarks.system_run import RunningSystem, config_text
from tests.conftest import ROOT, until
from watchdog.components import preload
from watchdog.core.child import ChildProcess, child_env
from watchdog.core.forkserver import ForkServer
from watchdog.core.notify_server import Notification, NotifyServer
from watchdog.shared.recovery_log import RecoveryLog
from watchdog.core.stale import runs
from watchdog.core.template import exec_reason

CONFIG = """
data_dir = "data"

[sim]
port = 0

[accounts.main]
transport = "sim"
phone = "27710000000"
api_port = 0

[accounts.phone]
transport = "neonize"
phone = "27710000009"
api_port = 0

[[projects]]
name = "lawley"
listen_account = "main"
groups = ["120363000000000001@g.us"]

[[projects]]
name = "off"
listen_account = "main"
enabled = false
groups = ["120363000000000002@g.us"]
"""


def ours(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "watchdog.cli", args[0], "--config", str(config), *args[1:]]


class Run:
    """A started ForkServer, its recovery log, and the children spawned through it (killed at the end)."""

    def __init__(self, tmp_path: Path) -> None:
        self.config = tmp_path / "wa.toml"
        self.config.write_text(CONFIG, encoding="utf-8")
        self.log = RecoveryLog(tmp_path / "recoveries.jsonl")
        self.server = ForkServer(self.log, preload=preload())
        self.children: list[ChildProcess] = []
        self.exits: list[ChildProcess] = []

    def spawn(self, argv: list[str], notify: str = "@wa-watchdog-test/none") -> ChildProcess:
        child = ChildProcess.spawn(argv, child_env(notify, 1.0), self.exits.append, cwd=str(ROOT),
                                   template=self.server)
        self.children.append(child)
        return child

    def monitor(self, project: str = "lawley", notify: str = "@wa-watchdog-test/none") -> ChildProcess:
        return self.spawn(ours(self.config, "monitor", "--project", project), notify)


def scenario(tmp_path: Path, body: Callable[[Run], Awaitable[None]]) -> None:
    async def main() -> None:
        run = Run(tmp_path)
        try:
            assert await run.server.start(), "the template did not become ready"
            await body(run)
        finally:
            for child in run.children:
                if child.running:
                    await child.stop(2.0)
            await run.server.close()
    asyncio.run(main())


async def output_of(fd: int, needle: bytes, timeout: float = 15.0) -> bytes:
    """Read the child's output pipe until `needle` shows up (or EOF)."""
    os.set_blocking(fd, False)
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen and time.monotonic() < deadline:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            await asyncio.sleep(0.02)
            continue
        if not data:
            break
        seen += data
    return seen


@pytest.mark.slow
def test_a_forked_child_is_our_own_child_in_its_own_session_with_its_command_line_and_notify_socket(
        tmp_path: Path) -> None:
    async def body(run: Run) -> None:
        notes: list[Notification] = []
        notify = NotifyServer("monitor:lawley", notes.append)
        try:
            child = run.monitor(notify=notify.address)
            assert child.forked
            process = psutil.Process(child.pid)
            assert process.ppid() == os.getpid()  # reparented to us (the subreaper), not the template's
            assert os.getpgid(child.pid) == child.pid and os.getsid(child.pid) == child.pid
            argv = ours(run.config, "monitor", "--project", "lawley")
            assert [a for a in process.cmdline() if a] == argv  # the leftover check reads this
            assert runs(process.cmdline(), (("monitor",), ("--project", "lawley")))
            output = await output_of(child.take_output(), b"waiting for the store")
            assert b"waiting for the store" in output
            await until(lambda: any(n.watchdog and n.sender == child.pid for n in notes), timeout=15, message="WATCHDOG=1")
            # STATUS= follows WATCHDOG=1 in a datagram of its own: under load it is read a moment later.
            await until(lambda: any(n.status for n in notes), timeout=15, message="STATUS=")
            statuses = [n.status for n in notes if n.status]
            assert statuses and "lawley" in statuses[-1]
            child.signal(signal.SIGKILL)
            assert await asyncio.wait_for(child.exited, 10) == -signal.SIGKILL
            assert run.exits == [child]
        finally:
            notify.close()
    scenario(tmp_path, body)


@pytest.mark.slow
def test_a_forked_childs_exit_code_and_a_clean_sigterm_stop_are_exact(tmp_path: Path) -> None:
    async def body(run: Run) -> None:
        disabled = run.monitor("off")  # a disabled project is a configuration error: exit 2
        assert disabled.forked
        output = await output_of(disabled.take_output(), b"disabled")
        assert await asyncio.wait_for(disabled.exited, 10) == 2
        assert b"project off is disabled" in output
        running = run.monitor()
        await output_of(running.take_output(), b"waiting for the store")
        assert await running.stop(5.0) == 0  # SIGTERM to the group: the monitor's own clean stop
    scenario(tmp_path, body)


@pytest.mark.slow
def test_the_template_is_fork_safe_and_never_loads_neonize(tmp_path: Path) -> None:
    async def body(run: Run) -> None:
        assert run.server.pid is not None
        template = psutil.Process(run.server.pid)
        assert template.num_threads() == 1
        sockets = [fd for fd in os.listdir(f"/proc/{template.pid}/fd")
                   if os.readlink(f"/proc/{template.pid}/fd/{fd}").startswith("socket:")]
        assert len(sockets) == 1  # only its line to the watchdog
        assert "neonize" not in Path(f"/proc/{template.pid}/maps").read_text()
        bridge = ours(run.config, "bridge", "--account", "phone")
        assert exec_reason(bridge) == "transport neonize is never loaded into the template"
        assert run.server.fork(bridge, child_env("@x", 1.0), None) is None  # the old way
        assert exec_reason(ours(run.config, "bridge", "--account", "main")) == ""
        assert exec_reason(ours(run.config, "bridge", "--account", "main", "--standby")) == STANDBY_REASON
        assert exec_reason([sys.executable, "-c", "pass"]) == "not one of our own components"
        assert exec_reason(ours(run.config, "status")) == "`status` is not pre-loaded"
        with pytest.raises(FileNotFoundError):  # as with exec: the watcher fails the program, no restart loop
            ChildProcess.spawn(ours(run.config, "monitor", "--project", "lawley"), child_env("@x", 1.0),
                               run.exits.append, cwd=str(run.config.parent / "missing"), template=run.server)
    scenario(tmp_path, body)


@pytest.mark.slow
def test_a_dead_template_means_exec_starts_a_record_and_a_new_template(tmp_path: Path) -> None:
    async def body(run: Run) -> None:
        first = run.server.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await until(lambda: not run.server.ready, timeout=15, message="the template's death noticed")
        fallback = run.monitor()
        assert not fallback.forked and fallback.popen is not None  # started the old way meanwhile
        assert b"waiting for the store" in await output_of(fallback.take_output(), b"waiting for the store")
        died = [r for r in run.log.read() if r["component"] == "template" and r["event"] == "exit"]
        assert died and died[0]["pid"] == first and died[0]["cause"] == "SIGKILL"
        assert "children start by exec" in died[0]["message"]
        await until(lambda: run.server.ready and run.server.pid != first, timeout=15, message="a new template ready")
        assert run.monitor().forked
        events = [(r["event"], r["pid"]) for r in run.log.read() if r["component"] == "template"]
        assert events == [("start", first), ("exit", first), ("restart", first), ("healthy", run.server.pid)]
        restart = [r for r in run.log.read() if r["event"] == "restart"][0]
        assert restart["new_pid"] == run.server.pid and restart["cause"] == "SIGKILL"
    scenario(tmp_path, body)


@pytest.mark.slow
def test_orphans_left_in_a_killed_childs_group_are_reaped(tmp_path: Path) -> None:
    """A child that started a process of its own is SIGKILLed: its group goes, and no zombie stays with us."""
    async def body(run: Run) -> None:
        worker = ROOT / "tests" / "children" / "worker.py"
        child = run.spawn([sys.executable, str(worker), "--child-grow-mb", "1"])
        grandchild = await until(lambda: psutil.Process(child.pid).children(), timeout=15, message="the worker's own child")
        orphan = grandchild[0].pid
        child.signal(signal.SIGKILL)
        await asyncio.wait_for(child.exited, 10)

        await until(lambda: not psutil.pid_exists(orphan), timeout=15, message=f"orphan {orphan} reaped, not left a zombie")
    scenario(tmp_path, body)


@pytest.mark.slow
def test_a_hundred_projects_start_forked_from_the_template_all_healthy_without_a_restart(tmp_path: Path) -> None:
    """The suite's short version of `scripts/bench scale` at 100 projects (the bench times it; this bounds it)."""
    system = RunningSystem(tmp_path, config_text(100))
    system.start(timeout=50)
    try:
        components = system.status()
        assert len(components) == 102 and all(c["healthy"] for c in components)
        assert sum(c["restarts"] for c in components) == 0
        assert system.proc is not None
        children = psutil.Process(system.proc.pid).children()
        templates = [p for p in children if p.cmdline()[1:3] == ["-m", "watchdog.core.template"]]
        assert len(templates) == 1
        assert templates[0].cmdline()[5] == ",".join(preload())  # `wa-watchdog run` passed the slices' modules
        by_pid = {p.pid: p for p in children}
        for component in components:  # each one our own child, named by its own command line
            name = component["name"].split(":")[-1]
            assert component["name"] == "sim" or name in by_pid[component["pid"]].cmdline()
        records = list(RecoveryLog(system.data_dir / "recoveries.jsonl").read())
        assert [r["event"] for r in records if r["component"] == "template"] == ["start"]
    finally:
        assert system.stop() == 0
