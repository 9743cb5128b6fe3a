"""One supervised program for the life of the watchdog, across any number of child processes.

The watcher owns the program's state machine (watchdog/core/states.py: every change
through one checked transition) and its current child: it starts the child,
and acts on what its parts report. Each part does one job and gets only what
it needs: ChildHealth (watchdog/core/child_health.py: ready, healthy, condition),
Checks (watchdog/core/child_checks.py: heartbeat, process state, memory, HTTP and TCP
probes; `unwell` when one fails), Restarts (watchdog/core/restarts.py: failure
history, backoff, crash loop; delays and what an exit means from the pure
watchdog/core/restart_policy.py), PlannedStops (watchdog/core/planned_stops.py:
operator restart, shutdown, reload), WarmStandby (watchdog/core/standby.py),
Recoveries (watchdog/core/recovery.py: the records), ProgramAlerts, and the
watchdog-wide start bounds (watchdog/core/throttle.py). It knows a `Program` and
its hooks, never what kind of program it is. Everything is driven by events on
the event loop: the child's exit (pidfd), its sd_notify datagrams, timers.
"""
from __future__ import annotations

import asyncio
import collections
import signal
import time
from collections.abc import Sequence

from loguru import logger

from watchdog.core import hooks
from watchdog.core import stale
from watchdog.shared import endpoints, exit_handoff
from watchdog.core.child_checks import Checks
from watchdog.core.child import ChildProcess, child_env, exit_cause
from watchdog.core.child_health import ChildHealth
from watchdog.core.child_output import ChildOutput, RotatingFile, log_path
from watchdog.core.context import Context
from watchdog.core.notify_server import Notification, NotifyServer
from watchdog.core.planned_stops import PlannedStops
from watchdog.core.program_alerts import ProgramAlerts
from watchdog.shared.programs import Program
from watchdog.core.recovery import Recoveries, Records
from watchdog.core.restart_policy import After, Next, RestartPolicy, exit_outcome
from watchdog.core.restarts import Restarts
from watchdog.core.standby import WarmStandby
from watchdog.core.states import State, StateMachine
from watchdog.core.throttle import Launcher
from watchdog.core.timers import Tasks


class Watcher:
    """One program: its state and child; starting, failures and exits; the parts do the rest."""

    def __init__(self, program: Program, context: Context) -> None:
        self.program = program
        self.name = program.name
        self.ctx = context
        settings = context.settings
        self.hooks = hooks.load(program.hooks)
        self.launcher = context.launcher or Launcher(1_000_000, 1e9, lambda name, why: None)
        self.machine = StateMachine(self.name, self._state_changed)
        self.child: ChildProcess | None = None
        self.records = Records(context.recovery_log, self.name)
        self.recoveries = Recoveries(self.name, self.records, context.metrics)
        self.recovery = self.recoveries.current
        self.alerts = ProgramAlerts(self.name, context, self.records.flush)
        self.tasks = Tasks(self.name)
        policy = RestartPolicy(settings.backoff_initial, settings.backoff_max, settings.crash_loop_exits,
                               settings.crash_loop_window)
        self.restart_history = Restarts(self.name, policy, settings.backoff_reset_after, self.records, self.alerts)
        self.health = ChildHealth(program, self.alerts, self)
        self.checks = Checks(program, self.hooks, settings, self.health, self.unwell, self.records,
                             context.data_dir, context.http, context.loop_gaps)
        self.notify = NotifyServer(self.name, self._on_notify)
        log_file = RotatingFile(log_path(context.data_dir, self.name), settings.child_log_max_bytes)
        self.output = ChildOutput(self.name, log_file, context.sink)
        standby_argv = self.hooks.standby_argv(program) if program.standby else ()
        self.standby = WarmStandby(self.name, standby_argv, self, ChildOutput(self.name, log_file, context.sink),
                                   policy, settings.term_grace) if standby_argv else None
        self.stops = PlannedStops(self.name, self, self.restart_history, self.standby, self.launcher,
                                  settings.term_grace, program.stop_timeout or settings.stop_timeout)

    # -- what others read ------------------------------------------------------------

    @property
    def state(self) -> State:
        return self.machine.state

    @property
    def is_running(self) -> bool:
        return self.state is State.RUNNING

    @property
    def healthy(self) -> bool:
        return self.health.healthy

    @property
    def condition(self) -> str:
        return self.health.condition

    @property
    def shutting_down(self) -> bool:
        return self.stops.shutting_down

    @property
    def restart_count(self) -> int:
        return self.recoveries.count

    @property
    def restart_times(self) -> collections.deque[float]:
        return self.recoveries.times

    @property
    def last_cause(self) -> str:
        return self.recoveries.last_cause

    @property
    def settled(self) -> bool:
        """Healthy, or not going to be by waiting: failed, or up while its upstream is away or an operator is
        needed (a bridge in a WhatsApp outage). What a program with this one in `after` waits for."""
        return self.healthy or self.state is State.FAILED or self.health.upstream_settled

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
            "restarts": self.restart_count,
            "last_cause": self.last_cause,
            "endpoints": record["endpoints"] if record and pid and record.get("pid") == pid else {},
            "status_text": self.health.status_text,
            "next_start_in_s": self.restart_history.next_start_in() if self.state is State.BACKOFF else None,
            "alerts": sorted(self.alerts.firing),
            **({"standby_pid": self.standby_pid} if self.standby else {}),
            **self.hooks.status_fields(self.health.last_probe),
        }

    def overdue(self) -> str | None:
        """A check that should have acted by now and has not: a sign the watchdog itself is wedged or broken."""
        age = self.machine.age()
        if self.state is State.EXITED and age > self.ctx.settings.term_grace + 10:
            return f"{self.name}: exited {age:.0f} s ago and neither restarted nor failed"
        if self.state not in (State.STARTING, State.RUNNING) or self.pid is None:
            return None
        return self.checks.overdue()

    # -- state -----------------------------------------------------------------------

    def _set_state(self, new: State) -> None:
        self.machine.set(new)

    def _state_changed(self, old: State, new: State) -> None:
        if old is State.STARTING:
            self.launcher.done(self.name)
        self.changed()

    def changed(self) -> None:
        """Something shown in status changed (HealthEvents, StandbyOwner)."""
        self.ctx.on_change(self)

    # -- requests (PlannedStops) -------------------------------------------------------

    async def restart(self, cause: str = "operator restart") -> dict:
        return await self.stops.restart(cause)

    def begin_shutdown(self) -> None:
        self.stops.begin_shutdown()

    async def stop(self, cause: str = "shutdown") -> None:
        await self.stops.stop(cause)
        self.tasks.cancel_all()

    def stay_stopped(self) -> None:
        if self.state in (State.BACKOFF, State.EXITED, State.FAILED):
            self._set_state(State.STOPPED)

    def begin_recovery(self, kind: str, cause: str, pid: int | None) -> None:
        self.recoveries.begin(kind, cause, pid)

    # -- starting ------------------------------------------------------------------

    async def start(self) -> None:
        """Start the child (first start, or an operator start of a FAILED program); no-op if it runs."""
        if self.pid is not None:
            return
        self.restart_history.cancel_backoff()
        await self._stop_leftovers()
        self._launch()

    def _start_soon(self) -> None:
        """Start without a task hop when nothing is left over from an earlier run (the common case)."""
        if self.shutting_down:
            return
        if stale.leftovers(self.program, self.ctx.data_dir, (self.pid, self.standby_pid)):
            self.tasks.run(self.start())
        else:
            self._launch()

    def _launch(self) -> None:
        """Spawn now, or once the watchdog-wide bounds allow (waiting in BACKOFF, so it is not `exited` for long)."""
        if not self.launcher.launch(self.name, self._spawn, restart=self.recovery.active) \
                and self.state is State.EXITED:
            self._set_state(State.BACKOFF)

    async def _stop_leftovers(self) -> None:
        await stale.stop_leftovers(self.program, self.ctx.data_dir, (self.pid, self.standby_pid),
                                   self.ctx.settings.term_grace, self.records)

    def child_environment(self) -> dict[str, str]:
        return {**child_env(self.notify.address, self.program.watchdog_sec), **dict(self.program.env)}

    def spawn_process(self, argv: Sequence[str]) -> ChildProcess:
        """Start `argv` as this program's process (StandbyOwner): its environment and cwd, its exit watched."""
        return ChildProcess.spawn(tuple(argv), self.child_environment(), self.on_exit, cwd=self.program.cwd or None)

    def _spawn(self) -> None:
        if self.shutting_down or (self.child is not None and self.child.running):
            self.launcher.done(self.name)
            return
        try:
            child = self.spawn_process(self.program.argv)
        except OSError as exc:  # the program itself is missing or not executable: retrying will not help
            self.launcher.done(self.name)
            self._fail(f"cannot start {self.program.argv[0]}: {exc}", "config_failed", pid=None)
            self.stops.spawned(None)
            return
        self.output.attach(child.take_output(), child.pid)
        self._adopt(child)

    def _adopt(self, child: ChildProcess, promoted: bool = False) -> None:
        """`child` (just spawned, or a promoted standby) is now the program's process: arm its checks."""
        self.child = child
        self.health.begin(child)
        self.checks.arm(child)
        self._set_state(State.STARTING)
        logger.info("{} {}, pid {}", self.name, "standby promoted" if promoted else "started", child.pid)
        self.recoveries.restarted(child.pid, child.started_at, promoted)
        self.stops.spawned(child.pid)

    def _promote_standby(self) -> bool:
        if self.standby is None:
            return False
        taken = self.standby.take(self.recovery.delay, self.output)
        if taken is None:
            return False
        process, self.output = taken
        self.recovery.delay = 0.0
        self._adopt(process, promoted=True)
        self.checks.wake()  # it may have said READY=1 before now, while it was not yet ours to hear
        # E.g. the child exited 3: an earlier run's process holds what the standby awaits. Looked for in a task,
        # so the promotion itself (in the exit's callback) reads nothing from /proc.
        self.tasks.run(self._stop_leftovers())
        return True

    # -- what the child says, and becoming healthy ---------------------------------------

    def _on_notify(self, note: Notification) -> None:
        child = self.child
        if child is None or not child.running or not note.sent_by(child.pid):
            return  # a previous instance's last words, or a stranger
        if note.watchdog:
            self.checks.heartbeat()
        if note.status is not None:
            self.health.status(note.status)
        if note.stopping:
            logger.info("{} says it is stopping", self.name)
        if note.ready:
            if self.program.ready.kind == "notify":
                self.health.ready_by_check()
            else:
                self.checks.wake()  # it says it is serving: probe now, not at the next period

    def became_healthy(self) -> None:
        """The child is healthy (HealthEvents): running, the recovery over, the next standby due."""
        if self.state is State.STARTING:
            self._set_state(State.RUNNING)
            if self.child is not None:
                logger.info("{} running, pid {} ({:.2f} s after its start)", self.name, self.child.pid,
                            time.monotonic() - self.child.started_at)
        self.recoveries.healthy(self.pid)
        self.restart_history.healthy()
        if self.standby is not None:
            self.standby.after_healthy()  # after the start-up, not during it
        self.ctx.on_change(self)

    # -- failures and exits ------------------------------------------------------------

    def unwell(self, event: str, cause: str) -> None:
        """A check failed (hang, unhealthy, rss_limit): SIGTERM, SIGKILL after term_grace, then restart."""
        child = self.child
        if child is None or not child.running or self.state not in (State.STARTING, State.RUNNING):
            return
        logger.warning("{} {}: {}; stopping pid {}", self.name, event, cause, child.pid)
        self.begin_recovery(event, cause, child.pid)
        self.stop_child(self.ctx.settings.term_grace, After.RECOVER)
        self.records.add(event, cause=cause, pid=child.pid)
        self.alerts.fire("hang", f"{self.name} {event}: {cause}; restarting it")

    def stop_child(self, grace: float, after: After) -> asyncio.Task | None:
        """Stop the running child (None: none runs). Planned stops use the program's stop_signal; a failed
        check's stop is SIGTERM (SIGCONT with both); SIGKILL after `grace`."""
        child = self.child
        if child is None or not child.running:
            return None
        self.stops.stopping(after)
        self.checks.cancel()
        self.health.stopping()
        self.restart_history.interrupted()
        if self.state is not State.STOPPING:
            self._set_state(State.STOPPING)
        sig = signal.SIGTERM if after is After.RECOVER else self.program.signal_number
        return self.tasks.run(child.stop(grace, sig))

    def on_exit(self, child: ChildProcess) -> None:
        """The pidfd fired: the child (or the standby) has ended (and is reaped)."""
        if self.standby is not None and child is self.standby.process:
            self.standby.ended(child)
            return
        if child is not self.child:
            return
        exit_handoff.record(self.ctx.data_dir, self.name, child.pid, child.exited_at)  # the next process dates its outage by it
        self.checks.cancel()
        self.restart_history.interrupted()
        code = child.returncode if child.returncode is not None else 0
        cause = exit_cause(code)
        stopping = self.state is State.STOPPING
        after = self.stops.after if stopping else After.STAY_STOPPED if self.shutting_down else None
        if self.shutting_down and not stopping:  # it got the stop signal before we sent ours (control-group)
            self.records.add("stop", pid=child.pid, cause="shutdown", message=f"ended by {cause['cause']} during shutdown")
        elif after is not None and after is not After.RECOVER:  # a planned stop, not a failure
            self.records.add("stop", pid=child.pid, message=f"ended by {cause['cause']}", at=self.stops.began,
                             cause=self.stops.cause if after is After.STAY_STOPPED else self.recovery.cause)
        else:
            self.records.add("exit", pid=child.pid, **cause)
        last_words = self.health.exited()
        self._set_state(State.EXITED)
        if after is None:
            logger.warning("{} pid {} exited: {}", self.name, child.pid, cause["cause"])
            self.begin_recovery("exit", str(cause["cause"]), child.pid)
        outcome = exit_outcome(code, self.recovery.cause if stopping else str(cause["cause"]), self.program.restart,
                               self.program.no_restart_exit_codes, after, last_words, self.hooks.exit_rules)
        if outcome.next is Next.STOP:
            self._set_state(State.STOPPED)
        elif outcome.next is Next.STOP_CLEAN:
            self.recovery.end()
            self.records.add("stop", pid=child.pid, cause="exited cleanly", message=f"restart = {self.program.restart}")
            self._set_state(State.STOPPED)
        elif outcome.next is Next.RESTART_NOW:
            self.recovery.delay = 0.0
            if not self._promote_standby():
                self._start_soon()
        elif outcome.next is Next.FAIL:
            self._fail(outcome.cause, outcome.rule, pid=child.pid)
        else:
            self._schedule_restart()

    def _schedule_restart(self) -> None:
        """First restart at once; then graduated backoff with jitter (watchdog.core.restart_policy)."""
        decision = self.restart_history.failed(self.recovery.failed_pid, self.recovery.cause)
        self.recovery.delay = decision.delay
        if self._promote_standby():
            return
        if decision.delay == 0:
            self._start_soon()
        else:
            self._set_state(State.BACKOFF)
            self.restart_history.back_off(decision.delay, self._start_soon)

    def _fail(self, cause: str, rule: str, pid: int | None) -> None:
        logger.error("{} failed: {}; not restarting until asked", self.name, cause)
        self.recoveries.failed(cause)
        if self.standby is not None:
            self.standby.stop(self.ctx.settings.term_grace)  # it would take over on its own
        if self.state is not State.FAILED:
            self._set_state(State.FAILED)
        self.records.add("failed", cause=cause, pid=pid)
        self.alerts.fire(rule, f"{self.name} failed: {cause}; not restarting it")

    def close(self) -> None:
        self.records.flush()
        self.checks.close()
        self.restart_history.close()
        if self.standby is not None:
            self.standby.close()
        self.notify.close()
        self.output.close()

