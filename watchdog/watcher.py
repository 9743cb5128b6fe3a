"""One supervised component: its state machine, restart backoff, crash-loop detection and health checks.

Everything here is driven by events on the watchdog's event loop: the child's
exit (pidfd), its sd_notify datagrams, and one timer per check at that check's
own period. Nothing polls faster than it has to, so ten children cost the
watchdog almost nothing.

States and transitions (as in supervisor's process.py, every change goes through
`_set_state`, which refuses a transition that is not in TRANSITIONS):

    STOPPED -> STARTING -> RUNNING (ready / healthy) -> STOPPING (hang, operator, shutdown) -> EXITED
    EXITED -> STARTING (immediate restart) | BACKOFF -> STARTING | FAILED (exit 2 or 4) | STOPPED

Warm standby (bridges with `standby_argv`): once the child is healthy a second
process is started that loads everything and then blocks on the session lock.
When the child ends (or is stopped for a failed check) the standby is promoted
(EXITED -> STARTING with the standby as the child): the kernel has already
handed it the lock, so recovery skips the cold start. The next standby is
started once the promoted one is healthy, after the backoff delay, so a crash
loop still backs off. The standby has no checks (it is silent while waiting)
and its own exits never touch the child.
"""
from __future__ import annotations

import asyncio
import collections
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import tenacity
from loguru import logger

from watchdog import endpoints, probes
from watchdog.child import ChildProcess, child_env, exit_cause
from watchdog.child_output import ChildOutput, RotatingFile, StderrSink, log_path
from watchdog.config import ProbeConfig, WatchdogConfig
from watchdog.exitcodes import EXIT_CONFIG, EXIT_NEEDS_OPERATOR
from watchdog.logs import standby_log_name
from watchdog.notify_server import Notification, NotifyServer
from watchdog.recovery_log import RecoveryLog
from watchdog.stale import stale_pids, stop_pid

if TYPE_CHECKING:
    from watchdog.alerts import AlertManager
    from watchdog.metrics import Metrics

STOPPED = "stopped"
STARTING = "starting"  # spawned, not yet ready (READY=1) or healthy (bridge: /api/health 200)
RUNNING = "running"
BACKOFF = "backoff"  # waiting out a restart delay
STOPPING = "stopping"  # SIGTERM sent (hang, operator restart or shutdown), waiting for the exit
EXITED = "exited"
FAILED = "failed"  # exit 2 (configuration) or 4 (needs an operator): not restarted until asked

TRANSITIONS: dict[str, frozenset[str]] = {
    STOPPED: frozenset({STARTING, FAILED}),
    STARTING: frozenset({RUNNING, STOPPING, EXITED}),
    RUNNING: frozenset({STOPPING, EXITED}),
    STOPPING: frozenset({EXITED}),
    EXITED: frozenset({STARTING, BACKOFF, FAILED, STOPPED}),
    BACKOFF: frozenset({STARTING, STOPPED, FAILED}),
    FAILED: frozenset({STARTING, STOPPED}),
}

SIM, BRIDGE, MONITOR = "sim", "bridge", "monitor"

# What to do when a child we are stopping has exited.
_RECOVER = "recover"  # a failed check: restart with backoff, counts towards a crash loop
_RESTART_NOW = "restart now"  # operator restart: at once, not counted
_STAY_STOPPED = "stay stopped"  # shutdown

FAILING_EXITS = {EXIT_CONFIG: "config_failed", EXIT_NEEDS_OPERATOR: "logged_out"}
RECOVERY_ALERTS = ("hang", "config_failed", "logged_out")  # resolved when the component is healthy again


def connection(health: dict) -> dict | None:
    """A bridge's WhatsApp connection from its last health answer; None if it did not answer."""
    if not health:
        return None
    return {key: health.get(key) for key in ("connected", "state", "reason", "open_window", "outbox_depth",
                                             "last_event_age_s", "caught_up")}


@dataclass(frozen=True)
class Component:
    """What to run and how to judge it. `argv` is injectable, so tests supervise small test children."""

    name: str  # sim | bridge:<account> | monitor:<project>
    kind: str  # SIM | BRIDGE | MONITOR
    argv: tuple[str, ...]
    watchdog_sec: float
    rss_limit_mb: int = 0
    probe: ProbeConfig | None = None  # bridges: HTTP probe of /api/health; healthy = 200
    session_dir: Path | None = None  # bridges: where an earlier run's owner left its pid
    signature: tuple[tuple[str, ...], ...] = ()  # command-line words identifying a leftover instance
    api_token: str = ""  # bridges with a token answer even /api/health only with it
    standby_argv: tuple[str, ...] = ()  # bridges: a warm standby waiting on the session lock; () = none


@dataclass
class Context:
    """What every watcher shares with the arbiter."""

    settings: WatchdogConfig
    data_dir: Path
    recovery_log: RecoveryLog
    alerts: AlertManager
    metrics: Metrics
    http: aiohttp.ClientSession
    sink: StderrSink
    on_change: Callable[[Watcher], None]


class Watcher:
    """Supervises one component for the life of the watchdog, across any number of child processes."""

    RSS_PERIOD = 1.0  # seconds between memory checks (only when rss_limit_mb is set)

    def __init__(self, component: Component, context: Context) -> None:
        self.component = component
        self.name = component.name
        self.ctx = context
        self.state = STOPPED
        self._state_since = time.monotonic()
        self.child: ChildProcess | None = None
        self.standby: ChildProcess | None = None  # the warm standby (promoted to `child` when the child ends)
        self._standby_failures = 0  # standby exits since one was last promoted: its respawn backoff
        self._standby_delay = 0.0  # before the next standby: the restart delay of the recovery that used one
        self._standby_stop_planned = False  # we are stopping the standby (shutdown, failed): no respawn
        self.ready = False  # READY=1 from the current child
        self.healthy = False  # sim/monitor: ready; bridge: last probe 200
        self.condition = ""  # bridge: its health `state` (connected, disconnected, ...)
        self.status_text = ""  # last STATUS= from the child
        self.health: dict = {}  # bridge: its last /api/health answer ({} when it did not answer)
        self.restarts = 0
        self.last_cause = ""
        self.restart_times: collections.deque[float] = collections.deque(maxlen=1000)  # monotonic, for STATUS=

        settings = context.settings
        self._wait = tenacity.wait_exponential_jitter(multiplier=settings.backoff_initial, max=settings.backoff_max,
                                                      jitter=settings.backoff_initial)
        self._attempts = 0  # consecutive failures since the component was last healthy for backoff_reset_after
        self._exits: collections.deque[float] = collections.deque()  # failure times within crash_loop_window
        self._crash_loop = False
        self._firing: set[str] = set()  # alert rules this watcher has fired and not resolved

        # The recovery in progress: when the failure was detected, why, and the pid that failed.
        self._detected_at: float | None = None
        self._cause = ""
        self._cause_kind = ""  # exit | hang | unhealthy | rss_limit | operator (a bounded metrics label)
        self._failed_pid: int | None = None
        self._delay = 0.0
        self._after_exit = _RECOVER

        self._last_heartbeat = 0.0
        self._probe_failures = 0
        self._probe_wakeup = asyncio.Event()
        self._outage_since: float | None = None  # epoch seconds a WhatsApp-side outage began
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task] = set()
        self._probe_task: asyncio.Task | None = None
        self._spawn_waiters: list[asyncio.Future] = []
        self._shutting_down = False
        self._unwritten: list[tuple[str, dict]] = []  # recovery records waiting for _write_records

        self.notify = NotifyServer(self.name, self._on_notify)
        self.output = ChildOutput(self.name, RotatingFile(log_path(context.data_dir, self.name),
                                                          settings.child_log_max_bytes), context.sink)
        self._standby_output = ChildOutput(standby_log_name(self.name), self.output.log_file,
                                           context.sink)  # swapped on promotion

    # -- state ---------------------------------------------------------------------

    def _set_state(self, new: str) -> None:
        assert new in TRANSITIONS[self.state], f"{self.name}: transition {self.state} -> {new} is not allowed"
        logger.debug("{} {} -> {}", self.name, self.state, new)
        self.state = new
        self._state_since = time.monotonic()
        self.ctx.on_change(self)

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child and self.child.running else None

    @property
    def standby_pid(self) -> int | None:
        return self.standby.pid if self.standby and self.standby.running else None

    def status(self) -> dict:
        """One component for `wa-watchdog status --json` (see the control API)."""
        record = endpoints.read(self.ctx.data_dir, self.name)
        pid = self.pid
        return {
            "name": self.name,
            "pid": pid,
            "state": self.state,
            "healthy": self.healthy,
            "condition": self.condition,
            "uptime_s": round(time.monotonic() - self.child.started_at, 3) if pid and self.child else None,
            "restarts": self.restarts,
            "last_cause": self.last_cause,
            "endpoints": record["endpoints"] if record and pid and record.get("pid") == pid else {},
            "status_text": self.status_text,
            "alerts": sorted(self._firing),
            **({"standby_pid": self.standby_pid, "connection": connection(self.health) if pid else None}
               if self.component.kind == BRIDGE else {}),
        }

    # -- starting ------------------------------------------------------------------

    async def start(self) -> None:
        """Start the child now (first start, or an operator start of a FAILED component); no-op if it runs."""
        if self.pid is not None:
            return
        self._cancel_timer("backoff")
        await self._stop_leftovers()
        self._spawn()

    def _start_soon(self) -> None:
        """Start without a task hop when nothing is left over from an earlier run (the common case)."""
        if self._shutting_down:
            return
        if self._leftovers():
            self._run_task(self.start())
        else:
            self._spawn()

    def _leftovers(self) -> list[int]:
        component = self.component
        if not component.signature:
            return []
        ours = (self.pid, self.standby_pid)
        return [pid for pid in stale_pids(self.name, component.signature, self.ctx.data_dir, component.session_dir)
                if pid not in ours]

    async def _stop_leftovers(self) -> None:
        for pid in self._leftovers():
            how = await stop_pid(pid, self.ctx.settings.term_grace)
            where = f"session {self.component.session_dir}" if self.component.session_dir else "its endpoints"
            logger.warning("{}: stopped pid {} left over from an earlier run ({}, by {})", self.name, pid, where, how)
            self._record("stop", pid=pid, cause=f"left over from an earlier run, held {where}",
                         message=f"stopped by {how} before starting a new instance")

    def _spawn(self) -> None:
        if self._shutting_down or (self.child is not None and self.child.running):
            return
        component = self.component
        try:
            child = ChildProcess.spawn(component.argv, child_env(self.notify.address, component.watchdog_sec),
                                       self._on_exit)
        except OSError as exc:  # the program itself is missing or not executable: retrying will not help
            self._fail(f"cannot start {component.argv[0]}: {exc}", "config_failed", pid=None)
            self._spawned(None)
            return
        self.output.attach(child.take_output(), child.pid)
        self._adopt(child)

    def _adopt(self, child: ChildProcess, promoted: bool = False) -> None:
        """`child` (just spawned, or a promoted standby) is now the component's process: arm its checks."""
        component = self.component
        self.child = child
        self.ready = self.healthy = False
        self.condition = "starting"
        self.status_text = ""
        self.health = {}
        self._probe_failures = 0
        self._last_heartbeat = child.started_at
        if component.watchdog_sec > 0:
            self._arm_heartbeat()
        if component.rss_limit_mb:
            self._schedule("rss", self.RSS_PERIOD, self._check_rss)
        if component.probe is not None:
            self._probe_task = self._run_task(self._probe_loop(child, component.probe))
        self._set_state(STARTING)
        logger.info("{} {}, pid {}", self.name, "standby promoted" if promoted else "started", child.pid)
        if self._detected_at is not None:
            self.restarts += 1
            self.restart_times.append(time.monotonic())
            self.ctx.metrics.count_restart(self.name, self._cause_kind)
            self._record(
                "restart", pid=self._failed_pid, new_pid=child.pid, cause=self._cause,
                delay_ms=round(self._delay * 1000, 1),
                restart_ms=round((child.started_at - self._detected_at) * 1000, 1), standby=promoted or None)
        self._spawned(child.pid)

    def _spawned(self, pid: int | None) -> None:
        """Tell operator restarts waiting for the new process its pid (None: it could not be started)."""
        for waiter in self._spawn_waiters:
            if not waiter.done():
                waiter.set_result(pid)
        self._spawn_waiters.clear()

    # -- the warm standby ------------------------------------------------------------

    def _spawn_standby(self) -> None:
        """Start a standby for the healthy child: it imports everything, then blocks on the session lock."""
        self._timers.pop("standby", None)  # (when called by its timer) nothing is pending any more
        component = self.component
        if (not component.standby_argv or self._shutting_down or self.standby_pid is not None
                or self.state != RUNNING):
            return  # not now: the next time the child is healthy schedules it again
        try:
            standby = ChildProcess.spawn(component.standby_argv,
                                         child_env(self.notify.address, component.watchdog_sec), self._on_exit)
        except OSError as exc:
            logger.error("{}: cannot start a standby: {}", self.name, exc)
            return
        self.standby = standby
        self._standby_stop_planned = False
        self._standby_output.attach(standby.take_output(), standby.pid)
        logger.info("{} standby started, pid {}", self.name, standby.pid)
        self.ctx.on_change(self)

    def _promote_standby(self) -> bool:
        """The child has ended: a live standby (which the kernel has handed the session lock) becomes the child.

        The restart delay the recovery would have waited moves to the next standby, so a crash loop
        still backs off; this recovery itself is immediate.
        """
        standby = self.standby
        if standby is None or not standby.running or self._standby_stop_planned or self._shutting_down:
            return False
        self.standby = None
        self._cancel_timer("standby")
        self._standby_failures = 0
        self._standby_delay, self._delay = self._delay, 0.0
        standby.started_at = time.monotonic()  # as the component's process it starts now: uptime, probe start-up
        self.output.detach()
        self.output, self._standby_output = self._standby_output, self.output
        self.output.name, self._standby_output.name = self.name, standby_log_name(self.name)
        self._adopt(standby, promoted=True)
        self._probe_wakeup.set()  # it may have said READY=1 before now, while it was not yet ours to hear
        if self._leftovers():  # e.g. the child exited 3: an earlier run's bridge holds the session the standby awaits
            self._run_task(self._stop_leftovers())
        return True

    def _standby_ended(self, standby: ChildProcess) -> None:
        """The standby exited on its own (or was stopped): the child is not affected; respawn with backoff."""
        self.standby = None
        self._standby_output.detach()
        self.ctx.on_change(self)
        assert standby.returncode is not None
        cause = exit_cause(standby.returncode)["cause"]
        if self._shutting_down or self._standby_stop_planned:
            logger.info("{} standby pid {} stopped ({})", self.name, standby.pid, cause)
            return
        self._standby_failures += 1
        delay = self._backoff(self._standby_failures)
        logger.warning("{} standby pid {} exited: {}; a new one in {:.2f} s", self.name, standby.pid, cause, delay)
        self._schedule("standby", delay, self._spawn_standby)

    def _stop_standby(self, grace: float) -> asyncio.Task | None:
        """SIGTERM the standby (SIGKILL after `grace`); it holds nothing, so this never disturbs the child."""
        self._cancel_timer("standby")
        standby = self.standby
        if standby is None or not standby.running:
            return None
        self._standby_stop_planned = True
        return self._run_task(standby.stop(grace))

    # -- the child's notifications -------------------------------------------------

    def _on_notify(self, note: Notification) -> None:
        child = self.child
        if child is None or not child.running or not self._from_child(note.sender, child.pid):
            return  # a previous instance's last words, or a stranger
        if note.watchdog:
            self._last_heartbeat = time.monotonic()
        if note.status is not None:
            self.status_text = note.status
            self.ctx.on_change(self)
        if note.stopping:
            logger.info("{} says it is stopping", self.name)
        if note.ready and not self.ready:
            self.ready = True
            if self.component.probe is None:
                self._became_healthy()
            else:
                self._probe_wakeup.set()  # the bridge says it is serving: probe now, not at the next period

    @staticmethod
    def _from_child(sender: int | None, pid: int) -> bool:
        if sender is None or sender == pid:
            return True
        try:
            return os.getpgid(sender) == pid  # something the child started, in its process group
        except OSError:
            return False

    def _became_healthy(self) -> None:
        if self.state == STARTING:
            self._set_state(RUNNING)
        self.healthy = True
        self.condition = self.condition if self.component.probe else "ready"
        if self._detected_at is not None:
            downtime = time.monotonic() - self._detected_at
            self._record("healthy", pid=self.pid, cause=self._cause, downtime_ms=round(downtime * 1000, 1))
            self.ctx.metrics.observe_recovery(self.name, downtime)
            logger.info("{} healthy again after {:.3f} s ({})", self.name, downtime, self._cause)
            self._detected_at = None
        for rule in RECOVERY_ALERTS:
            self._resolve(rule, f"{self.name} is healthy again")
        self._schedule("reset", self.ctx.settings.backoff_reset_after, self._healthy_long_enough)
        if self.component.standby_argv and self.standby_pid is None and "standby" not in self._timers:
            self._schedule("standby", self._standby_delay, self._spawn_standby)  # after the start-up, not during it
            self._standby_delay = 0.0
        self.ctx.on_change(self)

    def _healthy_long_enough(self) -> None:
        """Healthy for backoff_reset_after: the next failure restarts at once again and the crash loop is over."""
        self._attempts = 0
        self._exits.clear()
        if self._crash_loop:
            self._crash_loop = False
            self._resolve("crash_loop", f"{self.name} has been healthy for "
                                        f"{self.ctx.settings.backoff_reset_after:g} s")

    # -- checks --------------------------------------------------------------------

    def _arm_heartbeat(self) -> None:
        due = self._last_heartbeat + self.component.watchdog_sec - time.monotonic()
        self._schedule("heartbeat", max(due, 0.0), self._check_heartbeat)

    def _check_heartbeat(self) -> None:
        silent = time.monotonic() - self._last_heartbeat
        if silent >= self.component.watchdog_sec:
            self._unwell("hang", f"missed heartbeat: no WATCHDOG=1 for {silent:.1f} s "
                                 f"(watchdog_sec {self.component.watchdog_sec:g})")
        else:
            self._arm_heartbeat()

    def _check_rss(self) -> None:
        if self.pid is None:
            return
        rss = probes.rss_bytes(self.pid)
        limit = self.component.rss_limit_mb
        if rss is not None and rss > limit * 1024 * 1024:
            self._unwell("rss_limit", f"resident memory {rss / 1048576:.0f} MB above rss_limit_mb {limit}")
        else:
            self._schedule("rss", self.RSS_PERIOD, self._check_rss)

    async def _probe_loop(self, child: ChildProcess, probe: ProbeConfig) -> None:
        """Probe /api/health every `period`; faster while the bridge is coming up, at once on READY=1.

        A frozen process (SIGSTOP) is a hang at the next probe, without waiting for failure_threshold timeouts.
        """
        while child.running and self.child is child:
            starting = not self.healthy and time.monotonic() - child.started_at < probe.initial_delay
            try:
                await asyncio.wait_for(self._probe_wakeup.wait(), min(probe.period, 0.1) if starting else probe.period)
            except asyncio.TimeoutError:
                pass
            self._probe_wakeup.clear()
            counts = time.monotonic() - child.started_at >= probe.initial_delay
            if counts and probes.is_stopped(child.pid):  # frozen: no need to wait out a timeout to know
                self._unwell("hang", "process is stopped (SIGSTOP): it cannot answer /api/health")
                return
            url = self._published_api(child.pid)
            if url is None:
                result = probes.HealthResult(probes.FAILURE, "no endpoint", "no API endpoint published yet")
            else:
                result = await probes.probe_health(self.ctx.http, url, probe.timeout, self.component.api_token)
            if not child.running or self.child is not child or self.state not in (STARTING, RUNNING):
                return
            self._on_health(result, probe, counts)

    def _published_api(self, pid: int) -> str | None:
        record = endpoints.read(self.ctx.data_dir, self.name)
        if not record or record.get("pid") != pid:
            return None  # nothing yet, or what the previous instance published
        return record["endpoints"].get("api")

    def _on_health(self, result: probes.HealthResult, probe: ProbeConfig, counts: bool) -> None:
        was = (self.healthy, self.condition)
        self.health = result.body or {}
        if result.kind != probes.FAILURE:
            self._probe_failures = 0
            self.condition = result.state
        if result.kind == probes.OK:
            self._end_outage()
            for rule in probes.OPERATOR_STATES:
                self._resolve(rule, f"{self.name} is connected again")
            if not self.healthy:
                self._became_healthy()
        elif result.kind == probes.OUTAGE:
            self.healthy = False
            if counts:  # before initial_delay, `connecting` is just the bridge starting up
                self._outage(result)
        elif result.kind == probes.OPERATOR:
            self.healthy = False
            self._fire(result.state, f"{self.name}: {result.state.replace('_', ' ')}"
                                     f"{': ' + result.detail if result.detail else ''}; an operator is needed")
        elif counts:
            self._probe_failures += 1
            if self._probe_failures >= probe.failure_threshold:
                self._unwell("unhealthy", f"health probe failed {self._probe_failures} times: {result.state}"
                                          f"{' (' + result.detail + ')' if result.detail else ''}")
                return
        if (self.healthy, self.condition) != was:
            self.ctx.on_change(self)

    def _outage(self, result: probes.HealthResult) -> None:
        """WhatsApp is unreachable but the bridge is fine: no restart, alert with how long it has lasted."""
        now = time.time()
        if self._outage_since is None:
            self._outage_since = result.outage_started_at or now
            logger.warning("{} {} ({}): WhatsApp-side outage, not restarting", self.name, result.state, result.detail)
        elif result.outage_started_at:
            self._outage_since = min(self._outage_since, result.outage_started_at)
        duration = max(0.0, now - self._outage_since)
        self._fire("disconnect", f"{self.name} {result.state} for {duration:.0f} s"
                                 f"{' (' + result.detail + ')' if result.detail else ''}", duration)

    def _end_outage(self) -> None:
        if self._outage_since is None:
            return
        duration = max(0.0, time.time() - self._outage_since)
        self._outage_since = None
        self.ctx.metrics.observe_disconnect(self.name, duration)
        self._resolve("disconnect", f"{self.name} connected again after {duration:.0f} s")

    # -- failures ------------------------------------------------------------------

    def _unwell(self, event: str, cause: str) -> None:
        """A check failed (hang, unhealthy, rss_limit): SIGTERM, SIGKILL after term_grace, then restart."""
        child = self.child
        if child is None or not child.running or self.state not in (STARTING, RUNNING):
            return
        logger.warning("{} {}: {}; stopping pid {}", self.name, event, cause, child.pid)
        self._begin_recovery(event, cause, child.pid)
        self._stop_child(child, self.ctx.settings.term_grace, _RECOVER)
        self._record(event, cause=cause, pid=child.pid)
        self._fire("hang", f"{self.name} {event}: {cause}; restarting it")

    def _begin_recovery(self, kind: str, cause: str, pid: int | None) -> None:
        self._detected_at = time.monotonic()
        self._cause = cause
        self._cause_kind = kind
        self._failed_pid = pid
        self.last_cause = cause

    def _stop_child(self, child: ChildProcess, grace: float, after: str) -> asyncio.Task:
        self._after_exit = after
        self._cancel_checks()
        if self.state != STOPPING:
            self._set_state(STOPPING)
        return self._run_task(child.stop(grace))

    def _on_exit(self, child: ChildProcess) -> None:
        """The pidfd fired: the child (or the standby) has ended (and is reaped)."""
        if child is self.standby:
            self._standby_ended(child)
            return
        if child is not self.child:
            return
        self._cancel_checks()
        assert child.returncode is not None
        cause = exit_cause(child.returncode)
        stopping = self.state == STOPPING
        if self._shutting_down and not stopping:  # it got the stop signal before we sent ours (control-group)
            self._record("stop", pid=child.pid, cause="shutdown", message=f"ended by {cause['cause']} during shutdown")
        elif stopping and self._after_exit != _RECOVER:  # a planned stop, not a failure
            self._record("stop", pid=child.pid, message=f"ended by {cause['cause']}",
                         cause="shutdown" if self._after_exit == _STAY_STOPPED else self._cause)
        else:
            self._record("exit", pid=child.pid, **cause)
        self.ready = self.healthy = False
        self.condition = "exited"
        self._set_state(EXITED)
        if self._shutting_down and not stopping:
            self._set_state(STOPPED)
            return
        if stopping:
            if self._after_exit == _STAY_STOPPED:
                self._set_state(STOPPED)
            elif self._after_exit == _RESTART_NOW:
                self._delay = 0.0
                if not self._promote_standby():
                    self._start_soon()
            else:
                self._schedule_restart()
            return
        logger.warning("{} pid {} exited: {}", self.name, child.pid, cause["cause"])
        self._begin_recovery("exit", str(cause["cause"]), child.pid)
        if child.returncode in FAILING_EXITS:
            self._fail(f"{cause['cause']}: " + ("configuration error" if child.returncode == EXIT_CONFIG
                                                else "needs an operator (unpaired or logged out)"),
                       FAILING_EXITS[child.returncode], pid=child.pid)
        else:
            self._schedule_restart()

    def _schedule_restart(self) -> None:
        """First restart at once; then exponential backoff with jitter (tenacity); capped while crash-looping."""
        settings = self.ctx.settings
        now = time.monotonic()
        self._exits.append(now)
        while self._exits and now - self._exits[0] > settings.crash_loop_window:
            self._exits.popleft()
        self._attempts += 1
        if len(self._exits) >= settings.crash_loop_exits and not self._crash_loop:
            self._crash_loop = True
            cause = f"{len(self._exits)} exits in {settings.crash_loop_window:g} s"
            logger.error("{} crash loop: {}; retrying every {:g} s", self.name, cause, settings.backoff_max)
            self._record("crash_loop", cause=cause, backoff_s=settings.backoff_max, pid=self._failed_pid)
            self._fire("crash_loop", f"{self.name} is crash-looping: {cause} (last: {self._cause}); "
                                     f"retrying every {settings.backoff_max:g} s")
        if self._crash_loop:
            self._delay = settings.backoff_max
        elif self._attempts == 1:
            self._delay = 0.0
        else:
            self._delay = self._backoff(self._attempts - 1)
        if self._promote_standby():
            return
        if self._delay == 0:
            self._start_soon()
        else:
            self._set_state(BACKOFF)
            self._schedule("backoff", self._delay, self._start_soon)

    def _backoff(self, attempt: int) -> float:
        retry = tenacity.RetryCallState(None, None, (), {})
        retry.attempt_number = attempt
        return self._wait(retry)

    def _fail(self, cause: str, rule: str, pid: int | None) -> None:
        logger.error("{} failed: {}; not restarting until asked", self.name, cause)
        self.last_cause = cause
        self._detected_at = None
        self._stop_standby(self.ctx.settings.term_grace)  # it would take the session over on its own
        if self.state != FAILED:
            self._set_state(FAILED)
        self._record("failed", cause=cause, pid=pid)
        self._fire(rule, f"{self.name} failed: {cause}; not restarting it")

    # -- operator and shutdown -----------------------------------------------------

    async def restart(self, cause: str = "operator restart") -> dict:
        """Stop the child (SIGTERM, term_grace, SIGKILL) and start it again at once."""
        if self._shutting_down:
            raise RuntimeError(f"{self.name}: the watchdog is shutting down")
        old_pid = self.pid
        spawned = asyncio.get_running_loop().create_future()
        self._spawn_waiters.append(spawned)
        self._attempts = 0
        self._begin_recovery("operator", cause, old_pid)
        self._delay = 0.0
        child = self.child
        if child is not None and child.running:
            logger.info("{}: {}", self.name, cause)
            await self._stop_child(child, self.ctx.settings.term_grace, _RESTART_NOW)
        else:
            self._cancel_timer("backoff")
            await self.start()
        new_pid = await asyncio.wait_for(spawned, self.ctx.settings.term_grace + 10)
        return {"name": self.name, "old_pid": old_pid, "pid": new_pid, "state": self.state}

    def begin_shutdown(self) -> None:
        """The watchdog is stopping: from now on an exit ends the component, never restarts it."""
        self._shutting_down = True
        self._cancel_timer("backoff")
        self._stop_standby(self.ctx.settings.stop_timeout)  # first: once the child ends it would take over

    async def stop(self, timeout: float) -> None:
        """Shutdown: SIGTERM, SIGKILL after `timeout`; the component stays stopped."""
        self.begin_shutdown()
        standby = self.standby
        if standby is not None:
            await standby.stop(timeout)  # already signalled by begin_shutdown; gone before the child goes
        child = self.child
        if child is not None and child.running:
            await self._stop_child(child, timeout, _STAY_STOPPED)
        elif self.state in (BACKOFF, EXITED, FAILED):
            self._set_state(STOPPED)
        for task in list(self._tasks):
            task.cancel()

    def close(self) -> None:
        self._write_records()
        self._cancel_checks()
        self._cancel_timer("standby")
        self.notify.close()
        self._standby_output.detach()
        self.output.close()

    def overdue(self) -> str | None:
        """A check that should have acted by now and has not: a sign the watchdog itself is wedged or broken."""
        if self.state == EXITED and time.monotonic() - self._state_since > self.ctx.settings.term_grace + 10:
            return f"{self.name}: exited {time.monotonic() - self._state_since:.0f} s ago and neither restarted nor failed"
        if self.state not in (STARTING, RUNNING) or self.pid is None:
            return None
        silent = time.monotonic() - self._last_heartbeat
        if self.component.watchdog_sec > 0 and silent > 2 * self.component.watchdog_sec + 1:
            return f"{self.name}: heartbeat check overdue ({silent:.1f} s of silence unhandled)"
        if self._probe_task is not None and self._probe_task.done():
            return f"{self.name}: health probe stopped"
        return None

    # -- recovery log, alerts, timers, tasks -----------------------------------------

    def _record(self, event: str, **fields: object) -> None:
        """Queue a recovery record; written (and fsynced) right after the current event is handled.

        So a restart never waits for the disk: the exit is detected, the new process spawned, and only
        then are the exit and restart records written, in that order.
        """
        if not self._unwritten:
            asyncio.get_running_loop().call_soon(self._write_records)
        self._unwritten.append((event, fields))

    def _write_records(self) -> None:
        records, self._unwritten = self._unwritten, []
        for event, fields in records:
            try:
                self.ctx.recovery_log.append(self.name, event, **fields)
            except OSError as exc:
                logger.error("{}: recovery log not written ({} {}): {}", self.name, event, fields, exc)

    def _fire(self, rule: str, summary: str, duration_s: float | None = None) -> None:
        self._write_records()  # the alert manager logs the alert itself: keep the cause before it
        self._firing.add(rule)
        self.ctx.alerts.fire(rule, self.name, summary, duration_s=duration_s)

    def _resolve(self, rule: str, summary: str) -> None:
        if rule in self._firing:
            self._firing.discard(rule)
            self.ctx.alerts.resolve(rule, self.name, summary)

    def _schedule(self, name: str, delay: float, callback: Callable[[], None]) -> None:
        self._cancel_timer(name)
        self._timers[name] = asyncio.get_running_loop().call_later(delay, callback)

    def _cancel_timer(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    def _cancel_checks(self) -> None:
        for name in ("heartbeat", "rss", "reset"):
            self._cancel_timer(name)
        if self._probe_task is not None:
            self._probe_task.cancel()
            self._probe_task = None

    def _run_task(self, coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.opt(exception=task.exception()).error("{}: internal error", self.name)
