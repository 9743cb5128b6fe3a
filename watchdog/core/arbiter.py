"""`wa-watchdog run`: the arbiter owns every program's watcher, the control API and the systemd heartbeat.

Start order follows `after`: a program starts once every program it names is
healthy (or failed: waiting would not help), at the latest `start_timeout`
after it could have; stop order is the reverse (the monitors before the
bridges, the bridges before the simulator). SIGHUP or `POST /reload` reads the
config again and applies the difference (watchdog/shared/programs.diff), leaving every
unchanged program alone. The parts: watchdog/core/start_order.py (start after, stop in reverse),
watchdog/core/status_line.py (READY= and STATUS=), watchdog/core/watchdog_lock.py (one watchdog per data dir).
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import signal
from collections.abc import Callable

import aiohttp
from loguru import logger

from watchdog.control import token as control_token
from watchdog.core import last_config
from watchdog.shared import endpoints, logs
from watchdog.shared.alerts import AlertManager
from watchdog.core.child_output import RotatingFile, log_path
from watchdog.shared.logs import StderrSink
from watchdog.shared.config import Config, ConfigError, load
from watchdog.control.console.changes import Changes
from watchdog.control.console.view import Console
from watchdog.core.context import Context
from watchdog.control.api import start_control_server
from watchdog.shared.exitcodes import EXIT_ERROR, EXIT_OK
from watchdog.core.forkserver import ForkServer
from watchdog.core.self_watch import SelfWatch
from watchdog.core.metrics import Metrics
from watchdog.shared.programs import Program, diff
from watchdog.shared.recovery_log import RecoveryLog
from watchdog.core.start_order import dependencies, stop_in_order, wait_for
from watchdog.core.stale import component_of, record_children, recorded_children, standby_name
from watchdog.core.status_line import status_line, system_ready
from watchdog.core.systemd_heartbeat import SystemdHeartbeat
from watchdog.core.template import is_ours
from watchdog.core.throttle import Launcher
from watchdog.core.watchdog_lock import take_watchdog_lock
from watchdog.core.watcher import Watcher
from watchdog.shared import clock

# [watchdog] keys a running watchdog cannot take over: they apply at its next start.
FIXED_SETTINGS = ("control_host", "control_port", "control_token", "recovery_log", "recovery_log_max_bytes",
                  "child_log_max_bytes", "max_starting", "restart_rate")


def config_hash(config: Config) -> str:
    try:
        return hashlib.sha256(config.path.read_bytes()).hexdigest()
    except OSError:
        return ""


class Arbiter:
    """Runs the system: one Watcher per program, the control API, the systemd heartbeat, ordered start/stop.

    The product comes in from whoever starts it (watchdog/commands/run.py), as the core names none of it:
    `builtins(config)` are the slices' programs, `console_views` their console views ("module:Class"),
    `preload` the modules the fork template imports ahead. `programs` (instead of the built-ins and the
    config's `[[programs]]`) and `alerts` default to what the config says; tests pass their own.
    """

    def __init__(self, config: Config, programs: list[Program] | None = None,
                 alerts: AlertManager | None = None, sink: StderrSink | None = None,
                 systemd: SystemdHeartbeat | None = None,
                 builtins: Callable[[Config], list[Program]] = lambda config: [],
                 console_views: tuple[str, ...] = (), preload: tuple[str, ...] = ()) -> None:
        self.config = config
        self._from_config = programs is None
        self._builtins = builtins
        self._preload = preload
        self.programs = self._configured(config) if programs is None else programs
        self.recovery_log = RecoveryLog(config.watchdog.recovery_log, config.watchdog.recovery_log_max_bytes)
        self.alerts = alerts or AlertManager(config.alerts, self.recovery_log)
        self.metrics = Metrics()
        self.metrics.add_program_gauges(self._program_gauges)
        self.sink = sink or StderrSink()
        self.systemd = systemd or SystemdHeartbeat()
        self.watchers: dict[str, Watcher] = {}
        self.control_url = ""
        self.config_sha256 = config_hash(config)
        self.config_loaded_at = clock.now_s()
        self.reloads = 0
        self._context: Context | None = None
        self._stop_requested: asyncio.Event | None = None
        self._changed: asyncio.Event | None = None
        self.changes = Changes()  # what the console's live view waits on
        self.console = Console(config, self.status, self.restart, views=console_views)
        self._reload_lock = asyncio.Lock()
        self._signals = 0
        self._recorded_children: dict[str, int] = {}
        self._starting: set[asyncio.Task] = set()
        self._template: ForkServer | None = None
        self._template_started: asyncio.Task | None = None  # every start waits for it (ready or given up)

    def _configured(self, config: Config) -> list[Program]:
        """What the config says to run: the built-ins, then every `[[programs]]` entry."""
        return self._builtins(config) + list(config.programs)

    # -- what the control API calls -----------------------------------------------

    def status(self) -> list[dict]:
        return [watcher.status() for watcher in self.watchers.values()]

    def config_info(self) -> dict:
        """The configuration in force: file, sha256, when it was loaded (started or reloaded)."""
        return {"path": str(self.config.path), "sha256": self.config_sha256, "loaded_at": self.config_loaded_at,
                "age_s": round(clock.now_s() - self.config_loaded_at, 3), "reloads": self.reloads,
                "programs": list(self.watchers)}

    async def restart(self, name: str) -> dict:
        """Operator restart of one program; KeyError for an unknown name."""
        watcher = self.watchers[name]
        return await watcher.restart("operator restart")

    def request_stop(self) -> None:
        # Every watcher learns of the stop at once: under systemd's KillMode=control-group the children
        # get SIGTERM together with us, and one that exits first must not be restarted.
        for watcher in self.watchers.values():
            watcher.begin_shutdown()
        if self._stop_requested is not None:
            self._stop_requested.set()

    async def reload(self, cause: str = "operator") -> dict:
        """Read the config again; invalid: keep the old one and say why. Else start added programs, stop removed
        ones, restart changed ones; the rest is untouched. Returns {"ok", "sha256", "added", ...} or {"ok", "error"}."""
        async with self._reload_lock:
            self.systemd.reloading()
            try:
                return await self._reload(cause)
            finally:
                self.systemd.reloaded()

    async def _reload(self, cause: str) -> dict:
        sha256 = config_hash(self.config)
        try:
            # The same composition as the config in force (watchdog/components.py); data_dir is fixed for a
            # watchdog's life.
            new = load(type(self.config), self.config.path, self.config.data_dir)
        except ConfigError as exc:
            logger.error("reload ({}): {}; keeping the configuration in force", cause, exc)
            self.recovery_log.append("watchdog", "reload", cause=cause, sha256=sha256,
                                     message=f"invalid, the old configuration stays in force: {exc}")
            return {"ok": False, "error": str(exc)}
        programs = self._configured(new) if self._from_config else self.programs
        changes = diff(self.programs, programs)
        fixed = [f"watchdog.{key}" for key in FIXED_SETTINGS
                 if getattr(new.watchdog, key) != getattr(self.config.watchdog, key)]
        fixed += ["alerts"] if new.alerts != self.config.alerts else []
        note = f"; not applied until the watchdog restarts: {', '.join(fixed)}" if fixed else ""
        logger.info("reload ({}): {}{}", cause, changes.summary(), note)
        self.recovery_log.append("watchdog", "reload", cause=cause, sha256=sha256, message=changes.summary() + note,
                                 added=[p.name for p in changes.added], removed=[p.name for p in changes.removed],
                                 changed=[p.name for p in changes.changed])
        self.config, self.programs = new, programs
        last_config.save(new)
        self.console.reconfigure(new)
        self.config_sha256, self.config_loaded_at = sha256, clock.now_s()
        self.reloads += 1
        assert self._context is not None
        self._context.settings = new.watchdog
        going = {p.name: "removed" for p in changes.removed} | {p.name: "changed" for p in changes.changed}
        await stop_in_order([self.watchers[name] for name in going], lambda w: f"reload: {going[w.name]}", reload=True)
        for name in going:
            self.watchers.pop(name).close()
        for program in changes.added + changes.changed:
            self.watchers[program.name] = Watcher(program, self._context)
            self.metrics.set_component(program.name, up=False, healthy=False)
        for program in changes.added + changes.changed:
            self._start_when_ready(self.watchers[program.name], f"reload: {going.get(program.name, 'added')}")
        fresh = {p.name for p in changes.added + changes.changed}
        for watcher in self.watchers.values():
            if watcher.name not in fresh:
                watcher.renew_standby()  # the file changed: a standby that read it keeps the next takeover warm
        self._on_change(None)
        return {"ok": True, "sha256": sha256, "added": [p.name for p in changes.added],
                "removed": [p.name for p in changes.removed], "changed": [p.name for p in changes.changed],
                "not_applied": fixed}

    # -- running -------------------------------------------------------------------

    async def run(self) -> int:
        """Supervise until SIGTERM / SIGINT (or request_stop); returns the process exit code."""
        loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        self._changed = asyncio.Event()
        previous = {sig: signal.signal(sig, lambda sig, frame: self._signalled(loop, sig))
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        lock = await take_watchdog_lock(self.config.data_dir, self.config.watchdog, self._stop_requested)
        try:
            if lock is None:
                return EXIT_OK if self._stop_requested.is_set() else EXIT_ERROR
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
            return await self._supervise()
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if lock is not None:
                os.close(lock)

    def _signalled(self, loop: asyncio.AbstractEventLoop, sig: int) -> None:
        """SIGTERM / SIGINT, run by Python between two bytecodes: before the loop handles anything that came
        after the signal. Under KillMode=control-group a child may die of the same SIGTERM at once, and its
        exit must already be part of the shutdown, never a restart (asyncio's own handler would run after
        that exit if both arrive in one turn of the loop). Only flags here, as this interrupts any code; the
        stop runs on the loop."""
        for watcher in list(self.watchers.values()):
            watcher.note_shutdown()
        loop.call_soon_threadsafe(self._on_signal, sig)

    def _on_sighup(self) -> None:
        if self._stop_requested is not None and not self._stop_requested.is_set():
            task = asyncio.get_running_loop().create_task(self.reload("SIGHUP"))
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)
            task.add_done_callback(_log_failure)

    async def _supervise(self) -> int:
        loop = asyncio.get_running_loop()
        assert self._stop_requested is not None
        http = aiohttp.ClientSession()
        settings = self.config.watchdog
        launcher = Launcher(settings.max_starting, settings.restart_rate, self._throttled)
        self.loop_gaps = SelfWatch(self.recovery_log)  # gaps in its own loop, steps of the clock
        self._context = Context(settings, self.config.data_dir, self.recovery_log, self.alerts, self.metrics,
                                http, self.sink, self._on_change, launcher, self.loop_gaps)
        self.watchers = {program.name: Watcher(program, self._context) for program in self.programs}
        self._recorded_children = {name: pid for name, pid in recorded_children(self.config.data_dir).items()
                                   if component_of(name) in self.watchers}
        for watcher in self.watchers.values():
            self.metrics.set_component(watcher.name, up=False, healthy=False)
        try:
            runner, self.control_url = await start_control_server(
                self.config.watchdog, self.status, self.restart, self.metrics, self.reload, self.config_info,
                control_token.generate(self.config.data_dir),
                console=self.console, changes=self.changes)
        except OSError as exc:
            logger.error("wa-watchdog run: {}", exc)
            await self._close(http, launcher)
            return EXIT_ERROR
        endpoints.publish(self.config.data_dir, "watchdog", {"control": self.control_url})
        last_config.save(self.config)  # status, recoveries and logs read it when the file on disk turns invalid
        self.recovery_log.append("watchdog", "start", pid=os.getpid(), sha256=self.config_sha256,
                                 message=f"supervising {', '.join(self.watchers) or 'nothing'}")
        logger.info("wa-watchdog {} supervising {} program(s); control API {}", os.getpid(), len(self.watchers),
                    self.control_url)
        if settings.fork_template and any(is_ours(program.argv) for program in self.programs):
            self._template = ForkServer(self.recovery_log, preload=self._preload)
            self._context.template = self._template  # until it is ready it answers `exec`
            self._template_started = loop.create_task(self._template.start())
        for watcher in self.watchers.values():
            self._start_when_ready(watcher)
        heartbeat = loop.create_task(self.systemd.run(self._cycle))
        heartbeat.add_done_callback(_log_failure)
        ticking = loop.create_task(self.loop_gaps.tick())
        ticking.add_done_callback(_log_failure)
        await self._stop_requested.wait()

        self.systemd.stopping()
        logger.info("stopping, in the reverse of the start order")
        for task in [heartbeat, ticking, *self._starting]:
            task.cancel()
        await asyncio.gather(heartbeat, ticking, *self._starting, return_exceptions=True)
        await stop_in_order(list(self.watchers.values()), lambda w: "shutdown")
        if self._template is not None:
            self._context.template = None
            if self._template_started is not None:
                self._template_started.cancel()
            await self._template.close()
        await runner.cleanup()
        endpoints.remove(self.config.data_dir, "watchdog")
        await self._close(http, launcher)
        self.recovery_log.append("watchdog", "stop", pid=os.getpid(), message="every component stopped")
        logger.info("wa-watchdog stopped")
        return EXIT_OK

    def _throttled(self, name: str, why: str) -> None:
        logger.warning("{}: start delayed: {}", name, why)
        self.recovery_log.append(name, "throttle", cause=why)

    async def _close(self, http: aiohttp.ClientSession, launcher: Launcher) -> None:
        launcher.close()
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
            watcher.kill()

    # -- order ---------------------------------------------------------------------

    def _start_when_ready(self, watcher: Watcher, reason: str = "") -> None:
        task = asyncio.get_running_loop().create_task(self._start_after(watcher, reason))
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)
        task.add_done_callback(_log_failure)

    async def _start_after(self, watcher: Watcher, reason: str) -> None:
        """Start once every program in `after` is settled: healthy, failed, or up in an outage of its upstream
        (waiting would not help); at most start_timeout later, with a warning.

        The first starts also wait for the template (watchdog/core/forkserver.py): ready, or given up on after
        its READY_TIMEOUT, so a hundred children are not exec'd while it imports.
        """
        if self._template_started is not None:
            await asyncio.shield(self._template_started)
        def settled() -> bool:
            return all(w.settled for w in dependencies(watcher, self.watchers))
        assert self._changed is not None
        if not await wait_for(self._changed, settled, self.config.watchdog.start_timeout):
            waiting = [w.name for w in dependencies(watcher, self.watchers) if not w.healthy]
            logger.warning("{}: {} not healthy after {:g} s; starting anyway", watcher.name, ", ".join(waiting),
                           self.config.watchdog.start_timeout)
        if self.watchers.get(watcher.name) is not watcher or watcher.shutting_down:
            return
        if reason:
            self.recovery_log.append(watcher.name, "start", cause=reason)
        await watcher.start()

    # -- state for systemd and metrics -----------------------------------------------

    def _on_change(self, watcher: Watcher | None) -> None:
        # Ours where we run one; the previous watchdog's pid where we have not started it yet (so that the
        # leftover check still finds it). Written after a spawn, never before.
        ours = {w.name: w.pid for w in self.watchers.values() if w.pid}
        ours.update({standby_name(w.name): w.standby_pid for w in self.watchers.values() if w.standby_pid})
        children = {**{k: v for k, v in self._recorded_children.items() if component_of(k) in self.watchers}, **ours}
        if children != self._recorded_children and record_children(self.config.data_dir, children):
            self._recorded_children = children
        if watcher is not None:
            self.metrics.set_component(watcher.name, up=watcher.pid is not None, healthy=watcher.healthy)
        if self._changed is not None:
            self._changed.set()
        self.changes.bump()
        self.systemd.update(system_ready(self.watchers.values()), self.status_line())

    def _program_gauges(self) -> list[tuple[str, str, str, float]]:
        """Each program's own gauges (its hooks, from its last probe) for /metrics."""
        return [(watcher.name, name, help_text, value) for watcher in list(self.watchers.values())
                for name, (help_text, value) in watcher.hooks.gauges(watcher.health.last_probe).items()]

    def status_line(self) -> str:
        """One line for `systemctl status` (watchdog/core/status_line.py)."""
        return status_line(self.watchers.values())

    def _cycle(self) -> str | None:
        """One supervision cycle: every watcher's checks on time? Also refreshes STATUS= (restarts age out)."""
        problems = [p for p in (w.overdue() for w in self.watchers.values()) if p]
        self.systemd.update(system_ready(self.watchers.values()), self.status_line())
        return "; ".join(problems) or None


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.opt(exception=task.exception()).error("wa-watchdog: internal error in {}", task.get_coro())


def supervise(config: Config, builtins: Callable[[Config], list[Program]], console_views: tuple[str, ...],
              preload: tuple[str, ...]) -> int:
    """`wa-watchdog run` (watchdog/commands/run.py hands in the product): supervise until stopped."""
    sink = StderrSink()
    own_log = RotatingFile(log_path(config.data_dir, "watchdog"), config.watchdog.child_log_max_bytes)

    def write(message: str) -> None:
        data = str(message).encode("utf-8", "replace")
        own_log.write(data)
        sink.write(data)

    logs.setup("watchdog", sink=write)
    try:
        return asyncio.run(Arbiter(config, sink=sink, builtins=builtins, console_views=console_views,
                                   preload=preload).run())
    finally:
        own_log.close()
