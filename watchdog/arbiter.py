"""`wa-watchdog run`: the arbiter owns every component's watcher, the control API and the systemd heartbeat.

Start order: the simulator (and a short wait for its READY=1, bridges connect to
it), then the bridges, then the monitors (they cope with a bridge that is not up
yet). Stop order is the reverse of the data flow: monitors first, then bridges
(they flush their outbox), then the simulator.
"""
from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import signal
import sys
import time
from collections.abc import Callable

import aiohttp
from loguru import logger

from watchdog import endpoints
from watchdog.alerts import AlertManager
from watchdog.child_output import StderrSink
from watchdog.config import Config
from watchdog.control import start_control_server
from watchdog.exitcodes import EXIT_ERROR, EXIT_OK
from watchdog.metrics import Metrics
from watchdog.recovery_log import RecoveryLog
from watchdog.stale import component_of, record_children, recorded_children, standby_name
from watchdog.systemd_heartbeat import SystemdHeartbeat
from watchdog.watcher import BRIDGE, FAILED, MONITOR, SIM, STARTING, Component, Context, Watcher

WATCHDOG_LOCK = "watchdog.lock"  # in the run directory; holds the supervising watchdog's pid
SIM_READY_TIMEOUT = 10.0  # how long bridges wait for the simulator before starting anyway
STOP_ORDER = (MONITOR, BRIDGE, SIM)


def components_from_config(config: Config) -> list[Component]:
    """sim (when configured and enabled), one bridge per account, one monitor per enabled project, drops-api."""
    def argv(*args: str) -> tuple[str, ...]:
        return (sys.executable, "-m", "watchdog.cli", args[0], "--config", str(config.path),
                "--data-dir", str(config.data_dir), *args[1:])

    found = []
    if config.sim is not None and config.sim.enabled:
        found.append(Component("sim", SIM, argv("sim"), config.sim.watchdog_sec, config.sim.rss_limit_mb,
                               signature=(("sim",),)))
    for account in config.accounts.values():
        bridge = argv("bridge", "--account", account.name)
        found.append(Component(account.component, BRIDGE, bridge,
                               account.watchdog_sec, account.rss_limit_mb, probe=account.probe,
                               session_dir=account.session_dir, api_token=account.api_token,
                               signature=(("bridge",), ("--account", account.name)),
                               standby_argv=(*bridge, "--standby") if account.standby else ()))
    for project in config.projects:
        if project.enabled:
            found.append(Component(project.component, MONITOR, argv("monitor", "--project", project.name),
                                   project.watchdog_sec, project.rss_limit_mb,
                                   signature=(("monitor",), ("--project", project.name))))
    if config.drops_api.enabled:  # drops domain, supervised like a monitor (READY=1, WATCHDOG=1)
        found.append(Component("drops-api", MONITOR, argv("drops-api"), config.drops_api.watchdog_sec,
                               config.drops_api.rss_limit_mb, signature=(("drops-api",),)))
    return found


class Arbiter:
    """Runs the system: one Watcher per component, the control API, the systemd heartbeat, ordered start/stop.

    `components` and `alerts` default to what the config says; tests pass their own.
    """

    def __init__(self, config: Config, components: list[Component] | None = None,
                 alerts: AlertManager | None = None, sink: StderrSink | None = None,
                 systemd: SystemdHeartbeat | None = None) -> None:
        self.config = config
        self.components = components if components is not None else components_from_config(config)
        self.recovery_log = RecoveryLog(config.watchdog.recovery_log, config.watchdog.recovery_log_max_bytes)
        self.alerts = alerts or AlertManager(config.alerts, self.recovery_log)
        self.metrics = Metrics()
        self.sink = sink or StderrSink()
        self.systemd = systemd or SystemdHeartbeat()
        self.watchers: dict[str, Watcher] = {}
        self.control_url = ""
        self._stop_requested: asyncio.Event | None = None
        self._changed: asyncio.Event | None = None
        self._signals = 0
        self._recorded_children: dict[str, int] = {}

    # -- what the control API calls -----------------------------------------------

    def status(self) -> list[dict]:
        return [watcher.status() for watcher in self.watchers.values()]

    async def restart(self, name: str) -> dict:
        """Operator restart of one component; KeyError for an unknown name."""
        watcher = self.watchers[name]
        return await watcher.restart("operator restart")

    def request_stop(self) -> None:
        # Every watcher learns of the stop at once: under systemd's KillMode=control-group the children
        # get SIGTERM together with us, and one that exits first must not be restarted.
        for watcher in self.watchers.values():
            watcher.begin_shutdown()
        if self._stop_requested is not None:
            self._stop_requested.set()

    # -- running -------------------------------------------------------------------

    async def run(self) -> int:
        """Supervise until SIGTERM / SIGINT (or request_stop); returns the process exit code."""
        loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        self._changed = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        lock = await self._take_lock()
        try:
            if lock is None:
                return EXIT_OK if self._stop_requested.is_set() else EXIT_ERROR
            return await self._supervise()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if lock is not None:
                os.close(lock)

    async def _supervise(self) -> int:
        loop = asyncio.get_running_loop()
        assert self._stop_requested is not None
        http = aiohttp.ClientSession()
        context = Context(self.config.watchdog, self.config.data_dir, self.recovery_log, self.alerts, self.metrics,
                          http, self.sink, self._on_change)
        self.watchers = {component.name: Watcher(component, context) for component in self.components}
        self._recorded_children = {name: pid for name, pid in recorded_children(self.config.data_dir).items()
                                   if component_of(name) in self.watchers}
        for watcher in self.watchers.values():
            self.metrics.set_component(watcher.name, up=False, healthy=False)
        try:
            runner, self.control_url = await start_control_server(self.config.watchdog, self.status, self.restart,
                                                                  self.metrics)
        except OSError as exc:
            logger.error("wa-watchdog run: {}", exc)
            await self._close(http)
            return EXIT_ERROR
        endpoints.publish(self.config.data_dir, "watchdog", {"control": self.control_url})
        self.recovery_log.append("watchdog", "start", pid=os.getpid(),
                                 message=f"supervising {', '.join(self.watchers) or 'nothing'}")
        logger.info("wa-watchdog {} supervising {} component(s); control API {}", os.getpid(), len(self.watchers),
                    self.control_url)
        background = [loop.create_task(self._start_all()), loop.create_task(self.systemd.run(self._cycle))]
        for task in background:
            task.add_done_callback(_log_failure)
        await self._stop_requested.wait()

        self.systemd.stopping()
        logger.info("stopping: monitors, then bridges, then the simulator")
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        timeout = self.config.watchdog.stop_timeout
        for kind in STOP_ORDER:
            await asyncio.gather(*(w.stop(timeout) for w in self.watchers.values() if w.component.kind == kind))
        await runner.cleanup()
        endpoints.remove(self.config.data_dir, "watchdog")
        await self._close(http)
        self.recovery_log.append("watchdog", "stop", pid=os.getpid(), message="every component stopped")
        logger.info("wa-watchdog stopped")
        return EXIT_OK

    async def _take_lock(self) -> int | None:
        """One watchdog per data directory: two would each stop the other's bridge, forever.

        Waits a while for the lock, because a watchdog replaced by systemd may still be on its way out.
        Returns the lock's fd (held until this process exits), or None if another watchdog keeps it.
        """
        path = endpoints.run_dir(self.config.data_dir) / WATCHDOG_LOCK
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + self.config.watchdog.stop_timeout + self.config.watchdog.term_grace
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if self._stop_requested is not None and self._stop_requested.is_set():
                    os.close(fd)
                    return None
                if time.monotonic() > deadline:
                    holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                    logger.error("wa-watchdog run: another wa-watchdog (pid {}) already supervises {} ({})", holder,
                                 self.config.data_dir, path)
                    os.close(fd)
                    return None
                await asyncio.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        return fd

    async def _close(self, http: aiohttp.ClientSession) -> None:
        for watcher in self.watchers.values():
            watcher.close()
        await self.alerts.close()
        await http.close()

    def _on_signal(self, sig: int) -> None:
        self._signals += 1
        if self._signals == 1:
            logger.info("{}: stopping everything (again to kill at once)", signal.Signals(sig).name)
            self.request_stop()
            return
        logger.warning("{} again: killing every component now", signal.Signals(sig).name)
        for watcher in self.watchers.values():
            for process in (watcher.standby, watcher.child):
                if process is not None and process.running:
                    process.signal(signal.SIGKILL)

    async def _start_all(self) -> None:
        by_kind = {kind: [w for w in self.watchers.values() if w.component.kind == kind] for kind in (SIM, BRIDGE,
                                                                                                      MONITOR)}
        for watcher in by_kind[SIM]:
            await watcher.start()
        if by_kind[SIM] and not await self._wait_for(
                lambda: all(w.state != STARTING for w in by_kind[SIM]), SIM_READY_TIMEOUT):
            logger.warning("the simulator is not ready after {:g} s; starting the bridges anyway", SIM_READY_TIMEOUT)
        await asyncio.gather(*(w.start() for w in by_kind[BRIDGE]))
        await asyncio.gather(*(w.start() for w in by_kind[MONITOR]))

    async def _wait_for(self, condition: Callable[[], bool], timeout: float) -> bool:
        assert self._changed is not None
        deadline = time.monotonic() + timeout
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                return condition()
        return True

    # -- state for systemd and metrics -----------------------------------------------

    def _on_change(self, watcher: Watcher) -> None:
        # Ours where we run one; the previous watchdog's pid where we have not started it yet (so that the
        # leftover check still finds it). Written after a spawn, never before.
        ours = {w.name: w.pid for w in self.watchers.values() if w.pid}
        ours.update({standby_name(w.name): w.standby_pid for w in self.watchers.values() if w.standby_pid})
        children = {**self._recorded_children, **ours}
        if children != self._recorded_children:
            self._recorded_children = children
            record_children(self.config.data_dir, children)
        self.metrics.set_component(watcher.name, up=watcher.pid is not None, healthy=watcher.healthy)
        if self._changed is not None:
            self._changed.set()
        self.systemd.update(self._system_ready(), self.status_line())

    def _system_ready(self) -> bool:
        """Every bridge healthy and every monitor ready (READY=1).

        A FAILED component (exit 2 or 4) counts as settled: it will not get better by waiting, it is
        alerted and shown in STATUS=, and holding READY back would only make systemd restart the lot.
        """
        return all(w.healthy or w.state == FAILED for w in self.watchers.values()
                   if w.component.kind in (BRIDGE, MONITOR))

    def status_line(self) -> str:
        """One line for `systemctl status`, e.g. `bridge main connected · monitors 6/6 ready · 2 restarts in the last hour`."""
        watchers = list(self.watchers.values())
        parts = [f"{w.name.replace(':', ' ')} {w.condition if w.pid else w.state}"
                 for w in watchers if w.component.kind == BRIDGE]
        monitors = [w for w in watchers if w.component.kind == MONITOR]
        if monitors:
            parts.append(f"monitors {sum(w.healthy for w in monitors)}/{len(monitors)} ready")
        sim = [w for w in watchers if w.component.kind == SIM and not w.healthy]
        parts += [f"sim {w.state}" for w in sim]
        hour_ago = time.monotonic() - 3600
        restarts = sum(1 for w in watchers for t in w.restart_times if t >= hour_ago)
        parts.append(f"{restarts} restart{'' if restarts == 1 else 's'} in the last hour")
        failed = [w.name for w in watchers if w.state == FAILED]
        if failed:
            parts.append(f"FAILED: {', '.join(failed)}")
        return " · ".join(parts)

    def _cycle(self) -> str | None:
        """One supervision cycle: every watcher's checks on time? Also refreshes STATUS= (restarts age out)."""
        problems = [p for p in (w.overdue() for w in self.watchers.values()) if p]
        self.systemd.update(self._system_ready(), self.status_line())
        return "; ".join(problems) or None


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.opt(exception=task.exception()).error("wa-watchdog: internal error in {}", task.get_coro())


def cmd_run(config: Config, args: argparse.Namespace) -> int:
    sink = StderrSink()
    logger.remove()
    logger.add(sink.write_text, level="INFO", format="{time:HH:mm:ss.SSS} {level: <7} watchdog | {message}",
               backtrace=False, diagnose=False)
    return asyncio.run(Arbiter(config, sink=sink).run())
