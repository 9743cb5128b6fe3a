"""One supervised program for the life of the watchdog, across any number of child processes.

The watcher ties the parts together, each with one job: the state machine
(watchdog/states.py), the restart policy (watchdog/restart_policy.py, a pure
function), the checks on the current child (watchdog/checks.py), the warm
standby (watchdog/standby.py), the recovery records (watchdog/recovery.py),
its alerts (watchdog/program_alerts.py),
and the watchdog-wide start bounds (watchdog/throttle.py). It knows a
`Program` and its hooks, never what kind of program it is.

Everything is driven by events on the watchdog's event loop: the child's exit
(pidfd), its sd_notify datagrams, and one timer per check.
"""
from __future__ import annotations

import asyncio
import collections
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from loguru import logger

from watchdog import endpoints, exit_handoff, hooks, probes
from watchdog.checks import Checks
from watchdog.child import ChildProcess, child_env, exit_cause
from watchdog.child_output import ChildOutput, RotatingFile, StderrSink, log_path
from watchdog.config import WatchdogConfig
from watchdog.exitcodes import EXIT_CONFIG, EXIT_NEEDS_OPERATOR
from watchdog.notify_server import Notification, NotifyServer
from watchdog.program_alerts import ProgramAlerts
from watchdog.programs import Check, Program
from watchdog.recovery import Records, Recovery
from watchdog.recovery_log import RecoveryLog
from watchdog.restart_policy import RestartPolicy, decide
from watchdog.stale import stale_pids, stop_pid
from watchdog.standby import WarmStandby
from watchdog.states import State, StateMachine
from watchdog.throttle import Launcher

if TYPE_CHECKING:
    from watchdog.alerts import AlertManager
    from watchdog.metrics import Metrics

# What to do when a child we are stopping has exited.
_RECOVER = "recover"  # a failed check: restart with backoff, counts towards a crash loop
_RESTART_NOW = "restart now"  # operator restart: at once, not counted
_STAY_STOPPED = "stay stopped"  # shutdown, reload

# Exit 4 is a session that was never paired: a logout is seen live by the health probe (`logged_out`), not as an exit.
FAILED_RULES = {EXIT_CONFIG: "config_failed", EXIT_NEEDS_OPERATOR: "not_paired"}  # other no-restart codes: config_failed
RECOVERY_ALERTS = ("hang", "config_failed", "logged_out", "not_paired")  # resolved when the program is healthy again


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


class Watcher:
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
        self._after_exit = _RECOVER
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

    def _on_notify(self, note: Notification) -> None:
        child = self.child
        if child is None or not child.running or not self._from_child(note.sender, child.pid):
            return  # a previous instance's last words, or a stranger
        if note.watchdog:
            self.checks.heartbeat()
        if note.status is not None:
            self.status_text = note.status
            self.ctx.on_change(self)
        if note.stopping:
            logger.info("{} says it is stopping", self.name)
        if note.ready:
            if self.program.ready.kind == "notify":
                self.ready_by_check()
            else:
                self.checks.wake()  # it says it is serving: probe now, not at the next period

    @staticmethod
    def _from_child(sender: int | None, pid: int) -> bool:
        if sender is None or sender == pid:
            return True
        try:
            return os.getpgid(sender) == pid  # something the child started, in its process group
        except OSError:
            return False

    def ready_by_check(self) -> None:
        """Readiness satisfied (READY=1, or running for `started` seconds)."""
        if self.ready or self.child is None or not self.child.running:
            return
        self.ready = True
        self._started_up()
        if self.condition == "starting":
            self.condition = "ready"
        self._became_healthy()

    def _started_up(self) -> None:
        if not self.started:
            self.started = True
            self.checks.started_up()

    def on_probe(self, check: Check, result: probes.HealthResult, counts: bool) -> None:
        """A probe answered (failures are counted by the checks): what the answer means for health and alerts."""
        if self.state not in (State.STARTING, State.RUNNING):
            return
        was = (self.healthy, self.condition, self.settled)
        self.last_probe = result
        if result.kind != probes.FAILURE:
            self.condition = "ready" if result.state == "ok" else result.state
            self._started_up()
        if result.kind == probes.OK:
            self.alerts.answered_ok(self.condition)
            if check.target == self.program.ready.target:
                self.ready = True
            if self.ready and not self.healthy:
                self._became_healthy()
        elif result.kind == probes.OUTAGE:
            self.healthy = False
            if counts:  # before initial_delay, an outage is just the program starting up
                self.alerts.outage(result)
        elif result.kind == probes.OPERATOR:
            self.healthy = False
            self.alerts.operator_needed(result)
        if (self.healthy, self.condition, self.settled) != was:
            self.ctx.on_change(self)

    def _became_healthy(self) -> None:
        if self.state is State.STARTING:
            self._set_state(State.RUNNING)
            if self.child is not None:
                logger.info("{} running, pid {} ({:.2f} s after its start)", self.name, self.child.pid,
                            time.monotonic() - self.child.started_at)
        self.healthy = True
        recovery = self.recovery
        if recovery.active:
            downtime = recovery.elapsed()
            self.records.add("healthy", pid=self.pid, cause=recovery.cause, downtime_ms=round(downtime * 1000, 1))
            self.ctx.metrics.observe_recovery(self.name, downtime)
            logger.info("{} healthy again after {:.3f} s ({})", self.name, downtime, recovery.cause)
            recovery.end()
        for rule in RECOVERY_ALERTS:
            self.alerts.resolve(rule, f"{self.name} is healthy again")
        self._schedule("reset", self.ctx.settings.backoff_reset_after, self._healthy_long_enough)
        if self.standby is not None:
            self.standby.after_healthy()  # after the start-up, not during it
        self.ctx.on_change(self)

    def _healthy_long_enough(self) -> None:
        """Healthy for backoff_reset_after: the next failure restarts at once again and the crash loop is over."""
        self._failures.clear()
        if self._crash_loop:
            self._crash_loop = False
            self.alerts.resolve("crash_loop", f"{self.name} has been healthy for "
                                        f"{self.ctx.settings.backoff_reset_after:g} s")

    def overloaded(self, cause: str, log_only: bool = False) -> None:
        """A starved child was given time instead of being called hung: say so (once per episode)."""
        logger.warning("{} overloaded, not hung: {}", self.name, cause)
        if not log_only:
            self.records.add("overloaded", pid=self.pid, cause=cause)

    # -- failures ------------------------------------------------------------------

    def unwell(self, event: str, cause: str) -> None:
        """A check failed (hang, unhealthy, rss_limit): SIGTERM, SIGKILL after term_grace, then restart."""
        child = self.child
        if child is None or not child.running or self.state not in (State.STARTING, State.RUNNING):
            return
        logger.warning("{} {}: {}; stopping pid {}", self.name, event, cause, child.pid)
        self._begin_recovery(event, cause, child.pid)
        self._stop_child(child, self.ctx.settings.term_grace, _RECOVER, planned=False)
        self.records.add(event, cause=cause, pid=child.pid)
        self.alerts.fire("hang", f"{self.name} {event}: {cause}; restarting it")

    def _begin_recovery(self, kind: str, cause: str, pid: int | None) -> None:
        self.recovery.begin(kind, cause, pid)
        self.last_cause = cause

    def _stop_child(self, child: ChildProcess, grace: float, after: str, planned: bool = True) -> asyncio.Task:
        """Planned stops use the program's stop_signal; a failed check's stop is SIGTERM (SIGCONT with both)."""
        self._after_exit = after
        self.checks.cancel()
        self._cancel_timer("reset")
        if self.state is not State.STOPPING:
            self._set_state(State.STOPPING)
        return self.run_task(child.stop(grace, self.program.signal_number if planned else signal.SIGTERM))

    def on_exit(self, child: ChildProcess) -> None:
        """The pidfd fired: the child (or the standby) has ended (and is reaped)."""
        if self.standby is not None and child is self.standby.process:
            self.standby.ended(child)
            return
        if child is not self.child:
            return
        exit_handoff.record(self.ctx.data_dir, self.name, child)  # the next process dates its outage by it
        self.checks.cancel()
        self._cancel_timer("reset")
        code = child.returncode if child.returncode is not None else 0
        cause = exit_cause(code)
        stopping = self.state is State.STOPPING
        if self.shutting_down and not stopping:  # it got the stop signal before we sent ours (control-group)
            self.records.add("stop", pid=child.pid, cause="shutdown", message=f"ended by {cause['cause']} during shutdown")
        elif stopping and self._after_exit != _RECOVER:  # a planned stop, not a failure
            self.records.add("stop", pid=child.pid, message=f"ended by {cause['cause']}",
                             cause=self._stop_cause if self._after_exit == _STAY_STOPPED else self.recovery.cause)
        else:
            self.records.add("exit", pid=child.pid, **cause)
        last_words = "" if self.ready else self.status_text  # a refusal at start (e.g. a corrupt store) says why
        self.ready = self.started = self.healthy = False
        self.condition = "exited"
        self._set_state(State.EXITED)
        if self.shutting_down and not stopping:
            self._set_state(State.STOPPED)
            return
        if stopping:
            if self._after_exit == _STAY_STOPPED:
                self._set_state(State.STOPPED)
            elif self._after_exit == _RESTART_NOW:
                self.recovery.delay = 0.0
                if not self._promote_standby():
                    self._start_soon()
            elif self.program.restart == "never":
                self._fail(f"{self.recovery.cause}; restart = never", "hang", pid=child.pid)
            else:
                self._schedule_restart()
            return
        logger.warning("{} pid {} exited: {}", self.name, child.pid, cause["cause"])
        self._begin_recovery("exit", str(cause["cause"]), child.pid)
        program = self.program
        if code in program.no_restart_exit_codes:
            meaning = last_words or {EXIT_CONFIG: "configuration error",
                                     EXIT_NEEDS_OPERATOR: "needs an operator (not paired)"}.get(code, "a no-restart exit code")
            self._fail(f"{cause['cause']}: {meaning}", FAILED_RULES.get(code, "config_failed"), pid=child.pid)
        elif program.restart == "never" or (program.restart == "on-failure" and code == 0):
            if code == 0:
                self.recovery.end()
                self.records.add("stop", pid=child.pid, cause="exited cleanly", message=f"restart = {program.restart}")
                self._set_state(State.STOPPED)
            else:
                self._fail(f"{cause['cause']}; restart = never", "config_failed", pid=child.pid)
        else:
            self._schedule_restart()

    def _schedule_restart(self) -> None:
        """First restart at once; then graduated backoff with jitter (watchdog.restart_policy)."""
        now = time.monotonic()
        self._failures.append(now)
        decision = decide(self._failures, now, self.policy, random.random())
        if decision.crash_loop and not self._crash_loop:
            self._crash_loop = True
            cause = f"{decision.recent} exits in {self.policy.crash_loop_window:g} s"
            logger.error("{} crash loop: {}; backing off up to {:g} s", self.name, cause, self.policy.maximum)
            self.records.add("crash_loop", cause=cause, backoff_s=round(decision.delay, 3), pid=self.recovery.failed_pid)
            self.alerts.fire("crash_loop", f"{self.name} is crash-looping: {cause} (last: {self.recovery.cause}); "
                                     f"backing off up to {self.policy.maximum:g} s")
        self.recovery.delay = decision.delay
        if self._promote_standby():
            return
        if decision.delay == 0:
            self._start_soon()
        else:
            self._set_state(State.BACKOFF)
            self._schedule("backoff", decision.delay, self._start_soon)

    def _fail(self, cause: str, rule: str, pid: int | None) -> None:
        logger.error("{} failed: {}; not restarting until asked", self.name, cause)
        self.last_cause = cause
        self.recovery.end()
        if self.standby is not None:
            self.standby.stop(self.ctx.settings.term_grace)  # it would take over on its own
        if self.state is not State.FAILED:
            self._set_state(State.FAILED)
        self.records.add("failed", cause=cause, pid=pid)
        self.alerts.fire(rule, f"{self.name} failed: {cause}; not restarting it")

    # -- operator, reload and shutdown ---------------------------------------------------

    async def restart(self, cause: str = "operator restart") -> dict:
        """Stop the child (its stop signal, term_grace, SIGKILL) and start it again at once."""
        if self.shutting_down:
            raise RuntimeError(f"{self.name}: the watchdog is shutting down")
        old_pid = self.pid
        spawned = asyncio.get_running_loop().create_future()
        self._spawn_waiters.append(spawned)
        self._failures.clear()
        self._begin_recovery("operator", cause, old_pid)
        self.recovery.delay = 0.0
        if self.standby is not None:
            await self.standby.drop_if_stale()  # before the child frees the session for it
        child = self.child
        if child is not None and child.running:
            logger.info("{}: {}", self.name, cause)
            await self._stop_child(child, self.ctx.settings.term_grace, _RESTART_NOW)
        else:
            self._cancel_timer("backoff")
            await self.start()
        new_pid = await asyncio.wait_for(spawned, self.ctx.settings.term_grace + 10)
        return {"name": self.name, "old_pid": old_pid, "pid": new_pid, "state": str(self.state)}

    def begin_shutdown(self) -> None:
        """From now on an exit ends the program, never restarts it."""
        self.shutting_down = True
        self._cancel_timer("backoff")
        self.launcher.forget(self.name)
        if self.standby is not None:
            self.standby.stop(self._stop_timeout())  # first: once the child ends it would take over

    def _stop_timeout(self) -> float:
        return self.program.stop_timeout or self.ctx.settings.stop_timeout

    async def stop(self, cause: str = "shutdown") -> None:
        """Shutdown or reload: stop signal, SIGKILL after stop_timeout; the program stays stopped."""
        self._stop_cause = cause
        self.begin_shutdown()
        timeout = self._stop_timeout()
        if self.standby is not None and self.standby.process is not None:
            await self.standby.process.stop(timeout)  # already signalled: gone before the child goes
        child = self.child
        if child is not None and child.running:
            await self._stop_child(child, timeout, _STAY_STOPPED)
        elif self.state in (State.BACKOFF, State.EXITED, State.FAILED):
            self._set_state(State.STOPPED)
        for task in list(self._tasks):
            task.cancel()

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
