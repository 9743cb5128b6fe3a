"""One supervised program for the life of the watchdog, across any number of child processes.

The watcher ties the parts together, each with one job: the state machine
(watchdog/states.py), the restart policy (watchdog/restart_policy.py, a pure
function), the checks on the current child (watchdog/checks.py), the warm
standby (watchdog/standby.py), the recovery records (watchdog/recovery.py),
its alerts (watchdog/program_alerts.py),
and the watchdog-wide start bounds (watchdog/throttle.py). Its own methods
are split by job too: health (watchdog/watcher_health.py), failures and exits
(watchdog/watcher_exits.py), planned stops (watchdog/watcher_control.py). It knows a
`Program` and its hooks, never what kind of program it is.

Everything is driven by events on the watchdog's event loop: the child's exit
(pidfd), its sd_notify datagrams, and one timer per check.
"""
from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from loguru import logger

from watchdog import endpoints, hooks, probes
from watchdog.checks import Checks
from watchdog.child import ChildProcess, child_env
from watchdog.child_output import ChildOutput, RotatingFile, StderrSink, log_path
from watchdog.config import WatchdogConfig
from watchdog.notify_server import NotifyServer
from watchdog.program_alerts import ProgramAlerts
from watchdog.programs import Program
from watchdog.recovery import Records, Recovery
from watchdog.recovery_log import RecoveryLog
from watchdog.restart_policy import RestartPolicy
from watchdog.stale import stale_pids, stop_pid
from watchdog.standby import WarmStandby
from watchdog.states import State, StateMachine
from watchdog.throttle import Launcher
from watchdog.watcher_control import WatcherControl
from watchdog.watcher_exits import RECOVER, WatcherExits
from watchdog.watcher_health import WatcherHealth

if TYPE_CHECKING:
    from watchdog.alerts import AlertManager
    from watchdog.metrics import Metrics


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
    launcher: Launcher | None = None  # None: unbounded (a watcher on its own, in tests)


class Watcher(WatcherHealth, WatcherExits, WatcherControl):
    """One program: its state, its child and standby, starting; health, exits and planned stops are the bases'."""

    def __init__(self, program: Program, context: Context) -> None:
        self.program = program
        self.name = program.name
        self.ctx = context
        self.hooks = hooks.load(program.hooks)
        self.launcher = context.launcher or Launcher(1_000_000, 1e9, lambda name, why: None)
        self.machine = StateMachine(self.name, self._state_changed)
        self.child: ChildProcess | None = None
        self.ready = False  # readiness satisfied for the current child (READY=1, its check, or `started` seconds)
        self.started = False  # ready, or answering its probe: the start-up grace is over
        self.healthy = False
        self.condition = ""  # the program's own word for its health (a bridge: connected, disconnected, ...)
        self.last_probe: probes.HealthResult | None = None  # the last answer of its liveness probe
        self.status_text = ""  # last STATUS= from the child
        self.restarts = 0
        self.last_cause = ""
        self.restart_times: collections.deque[float] = collections.deque(maxlen=1000)  # monotonic, for STATUS=
        self.shutting_down = False
        self._stop_cause = "shutdown"  # the cause of a planned stop that leaves the program stopped

        settings = context.settings
        self.policy = RestartPolicy(settings.backoff_initial, settings.backoff_max, settings.crash_loop_exits,
                                    settings.crash_loop_window)
        self._failures: collections.deque[float] = collections.deque(maxlen=64)  # since the last healthy spell
        self._crash_loop = False
        self.recovery = Recovery()
        self.records = Records(context.recovery_log, self.name)
        self.alerts = ProgramAlerts(self.name, context, self.records.flush)
        self._after_exit = RECOVER
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task] = set()
        self._spawn_waiters: list[asyncio.Future] = []

        self.notify = NotifyServer(self.name, self._on_notify)
        self.output = ChildOutput(self.name, RotatingFile(log_path(context.data_dir, self.name),
                                                          settings.child_log_max_bytes), context.sink)
        self.checks = Checks(self)
        standby_argv = self.hooks.standby_argv(program) if program.standby else ()
        self.standby = WarmStandby(self, standby_argv) if standby_argv else None

    # -- state ---------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self.machine.state

    @property
    def is_running(self) -> bool:
        return self.state is State.RUNNING

    def _set_state(self, new: State) -> None:
        self.machine.set(new)

    def _state_changed(self, old: State, new: State) -> None:
        if old is State.STARTING:
            self.launcher.done(self.name)
        self.ctx.on_change(self)

    @property
    def settled(self) -> bool:
        """Healthy, or not going to be by waiting: failed, or up while its upstream is away or an operator is
        needed (a bridge in a WhatsApp outage). What a program with this one in `after` waits for."""
        return self.healthy or self.state is State.FAILED or (
            self.started and self.alerts.upstream_away)

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child and self.child.running else None

    @property
    def standby_pid(self) -> int | None:
        return self.standby.pid if self.standby else None

    def status(self) -> dict:
        """One program for `wa-watchdog status --json` (see the control API)."""
        record = endpoints.read(self.ctx.data_dir, self.name)
        pid = self.pid
        return {
            "name": self.name,
            "pid": pid,
            "state": str(self.state),
            "healthy": self.healthy,
            "condition": self.condition,
            "uptime_s": round(time.monotonic() - self.child.started_at, 3) if pid and self.child else None,
            "restarts": self.restarts,
            "last_cause": self.last_cause,
            "endpoints": record["endpoints"] if record and pid and record.get("pid") == pid else {},
            "status_text": self.status_text,
            "next_start_in_s": self._next_start_in(),
            "alerts": sorted(self.alerts.firing),
            **({"standby_pid": self.standby_pid} if self.standby else {}),
            **self.hooks.status_fields(self.last_probe),
        }

    def _next_start_in(self) -> float | None:
        """Seconds until the backoff timer starts the program again; None unless it is backing off."""
        timer = self._timers.get("backoff")
        if self.state is not State.BACKOFF or timer is None:
            return None
        return round(max(0.0, timer.when() - asyncio.get_running_loop().time()), 3)

    # -- starting ------------------------------------------------------------------

    async def start(self) -> None:
        """Start the child (first start, or an operator start of a FAILED program); no-op if it runs."""
        if self.pid is not None:
            return
        self._cancel_timer("backoff")
        await self._stop_leftovers()
        self._launch()

    def _start_soon(self) -> None:
        """Start without a task hop when nothing is left over from an earlier run (the common case)."""
        if self.shutting_down:
            return
        if self._leftovers():
            self.run_task(self.start())
        else:
            self._launch()

    def _launch(self) -> None:
        """Spawn now, or once the watchdog-wide bounds allow (waiting in BACKOFF, so it is not `exited` for long)."""
        if not self.launcher.launch(self.name, self._spawn, restart=self.recovery.active) \
                and self.state is State.EXITED:
            self._set_state(State.BACKOFF)

    def _leftovers(self) -> list[int]:
        ours = (self.pid, self.standby_pid)
        return [pid for pid in stale_pids(self.name, self.program.leftover_signature, self.ctx.data_dir,
                                          self.program.pidfile) if pid not in ours]

    async def _stop_leftovers(self) -> None:
        for pid in self._leftovers():
            how = await stop_pid(pid, self.ctx.settings.term_grace)
            where = f"named by {self.program.pidfile}" if self.program.pidfile else "its endpoints"
            logger.warning("{}: stopped pid {} left over from an earlier run ({}, by {})", self.name, pid, where, how)
            self.records.add("stop", pid=pid, cause=f"left over from an earlier run, {where}",
                             message=f"stopped by {how} before starting a new instance")

    def child_environment(self) -> dict[str, str]:
        return {**child_env(self.notify.address, self.program.watchdog_sec), **dict(self.program.env)}

    def _spawn(self) -> None:
        if self.shutting_down or (self.child is not None and self.child.running):
            self.launcher.done(self.name)
            return
        program = self.program
        try:
            child = ChildProcess.spawn(program.argv, self.child_environment(), self.on_exit, cwd=program.cwd or None)
        except OSError as exc:  # the program itself is missing or not executable: retrying will not help
            self.launcher.done(self.name)
            self._fail(f"cannot start {program.argv[0]}: {exc}", "config_failed", pid=None)
            self._spawned(None)
            return
        self.output.attach(child.take_output(), child.pid)
        self._adopt(child)

    def _adopt(self, child: ChildProcess, promoted: bool = False) -> None:
        """`child` (just spawned, or a promoted standby) is now the program's process: arm its checks."""
        self.child = child
        self.ready = self.started = self.healthy = False
        self.condition = "starting"
        self.status_text = ""
        self.checks.arm(child)
        self._set_state(State.STARTING)
        logger.info("{} {}, pid {}", self.name, "standby promoted" if promoted else "started", child.pid)
        recovery = self.recovery
        if recovery.active:
            self.restarts += 1
            self.restart_times.append(time.monotonic())
            self.ctx.metrics.count_restart(self.name, recovery.kind)
            self.records.add("restart", pid=recovery.failed_pid, new_pid=child.pid, cause=recovery.cause,
                             delay_ms=round(recovery.delay * 1000, 1),
                             restart_ms=round((child.started_at - recovery.detected_at) * 1000, 1),
                             standby=promoted or None)
        self._spawned(child.pid)

    def _spawned(self, pid: int | None) -> None:
        """Tell operator restarts waiting for the new process its pid (None: it could not be started)."""
        for waiter in self._spawn_waiters:
            if not waiter.done():
                waiter.set_result(pid)
        self._spawn_waiters.clear()

    def _promote_standby(self) -> bool:
        if self.standby is None:
            return False
        process = self.standby.take(self.recovery.delay)
        if process is None:
            return False
        self.recovery.delay = 0.0
        self._adopt(process, promoted=True)
        self.checks.wake()  # it may have said READY=1 before now, while it was not yet ours to hear
        if self._leftovers():  # e.g. the child exited 3: an earlier run's process holds what the standby awaits
            self.run_task(self._stop_leftovers())
        return True

    # -- the child's notifications and checks --------------------------------------------

    def close(self) -> None:
        self.records.flush()
        self.checks.cancel()
        for name in list(self._timers):
            self._cancel_timer(name)
        if self.standby is not None:
            self.standby.close()
        self.notify.close()
        self.output.close()

    def overdue(self) -> str | None:
        """A check that should have acted by now and has not: a sign the watchdog itself is wedged or broken."""
        age = self.machine.age()
        if self.state is State.EXITED and age > self.ctx.settings.term_grace + 10:
            return f"{self.name}: exited {age:.0f} s ago and neither restarted nor failed"
        if self.state not in (State.STARTING, State.RUNNING) or self.pid is None:
            return None
        return self.checks.overdue()

    # -- timers, tasks ----------------------------------------------------------------

    def _schedule(self, name: str, delay: float, callback: Callable[[], None]) -> None:
        self._cancel_timer(name)
        self._timers[name] = asyncio.get_running_loop().call_later(delay, callback)

    def _cancel_timer(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    def run_task(self, coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.opt(exception=task.exception()).error("{}: internal error", self.name)
