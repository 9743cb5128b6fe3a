"""One supervised program for the life of the watchdog, across any number of child processes.

The watcher is the program's lifecycle, read top to bottom in this file (one
module on purpose: start, health verdicts, stops and exits in one place): it
owns the state machine (watchdog/core/states.py: every phase that decides what
happens next, every change through one checked transition) and the current
child. It starts the child, stops it (a failed check, an operator restart,
shutdown, reload: the stopping phase says what the exit leads to) and acts on
its exit. Each part does one job, gets only what it needs and tells the
watcher its verdicts: ChildHealth (answering, healthy, not healthy), Checks
(`unwell` when one fails), FailureHistory (failures, backoff, crash loop; the
pure restart_policy decides), WarmStandby, Recoveries (the records),
ProgramAlerts, the start bounds (throttle.py). It knows a `Program` and its
hooks, never what kind of program it is. Everything is driven by events on the
event loop: the child's exit (pidfd), its sd_notify datagrams, timers.
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
from watchdog.shared import clock, endpoints, exit_handoff
from watchdog.core.child_checks import Checks
from watchdog.core.child import ChildProcess, child_env, exit_cause
from watchdog.core.child_health import ChildHealth
from watchdog.core.child_output import ChildOutput, RotatingFile, log_path
from watchdog.core.context import Context
from watchdog.core.failure_history import FailureHistory
from watchdog.core.notify_server import Notification, NotifyServer
from watchdog.core.program_alerts import ProgramAlerts
from watchdog.shared.programs import Program
from watchdog.core.recovery import Recoveries, Records
from watchdog.core.restart_policy import After, Next, RestartPolicy, exit_outcome
from watchdog.core.standby import WarmStandby
from watchdog.core.states import Phase, State, program_machine
from watchdog.core.throttle import Launcher
from watchdog.core.timers import Tasks


# What the exit of a child stopped in each stopping phase leads to (watchdog/core/restart_policy.exit_outcome).
AFTER_STOP = {Phase.STOPPING_TO_RECOVER: After.RECOVER, Phase.STOPPING_TO_RESTART: After.RESTART_NOW,
              Phase.STOPPING_FOR_SHUTDOWN: After.STAY_STOPPED, Phase.STOPPING_FOR_RELOAD: After.STAY_STOPPED}


class Watcher:
    """One program: its phase and child; starting, stopping, failures and exits; the parts do the rest."""

    def __init__(self, program: Program, context: Context) -> None:
        self.program = program
        self.name = program.name
        self.ctx = context
        settings = context.settings
        self.hooks = hooks.load(program.hooks)
        self.launcher = context.launcher or Launcher(1_000_000, 1e9, lambda name, why: None)
        self.machine = program_machine(self.name, self._state_changed)
        self.child: ChildProcess | None = None
        self.records = Records(context.recovery_log, self.name)
        self.recoveries = Recoveries(self.name, self.records, context.metrics)
        self.alerts = ProgramAlerts(self.name, context, self.records.flush)
        self.tasks = Tasks(self.name)
        policy = RestartPolicy(settings.backoff_initial, settings.backoff_max, settings.crash_loop_exits,
                               settings.crash_loop_window)
        self.failures = FailureHistory(self.name, policy, settings.backoff_reset_after, self.records, self.alerts)
        self.health = ChildHealth(program, self.alerts, self)
        self.checks = Checks(program, self.hooks, settings, self.health, self.unwell, self.records,
                             context.data_dir, context.http, context.loop_gaps)
        self.notify = NotifyServer(self.name, self._on_notify)
        log_file = RotatingFile(log_path(context.data_dir, self.name), settings.child_log_max_bytes)
        self.output = ChildOutput(self.name, log_file, context.sink)
        standby_argv = self.hooks.standby_argv(program) if program.standby else ()
        self.standby = WarmStandby(self.name, standby_argv, self, ChildOutput(self.name, log_file, context.sink),
                                   policy, settings.term_grace) if standby_argv else None
        self.term_grace = settings.term_grace  # an operator restart's grace (a failed check's is read when it fails)
        self.stop_timeout = program.stop_timeout or settings.stop_timeout  # shutdown's and reload's
        self._ending = False  # shutdown or reload: from now on an exit ends the program, never restarts it
        self._stop_cause = "shutdown"  # of a stop that leaves the program stopped: its stop record's cause
        self._stop_began = 0.0  # wall-clock time the stop signal went out: the stop record's time
        self._stopped_while = Phase.STOPPED  # the phase a stop began in: health as shown until the child is gone
        self._pid_waiters: list[asyncio.Future] = []  # operator restarts waiting for the new pid

    # -- what others read ------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        return self.machine.state

    @property
    def state(self) -> State:
        """What status shows of the phase."""
        return self.phase.shown

    @property
    def judged(self) -> Phase:
        """The phase health is read from (HealthEvents): while a child is stopped, the one the stop began in."""
        return self._stopped_while if self.phase.stopping else self.phase

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
        return self._ending

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
            "next_start_in_s": self.failures.next_start_in() if self.phase is Phase.BACKOFF else None,
            "alerts": sorted(self.alerts.firing),
            **({"standby_pid": self.standby_pid} if self.standby else {}),
            **self.hooks.status_fields(self.health.last_probe),
        }

    def overdue(self) -> str | None:
        """A check that should have acted by now and has not: a sign the watchdog itself is wedged or broken."""
        age = self.machine.age()
        if self.phase is Phase.EXITED and age > self.ctx.settings.term_grace + 10:
            return f"{self.name}: exited {age:.0f} s ago and neither restarted nor failed"
        if not self.phase.up or self.pid is None:
            return None
        return self.checks.overdue()

    # -- the phase -------------------------------------------------------------------

    def _set(self, new: Phase) -> None:
        self.machine.set(new)

    def _state_changed(self, old: Phase, new: Phase) -> None:
        if old.shown is State.STARTING and new.shown is not State.STARTING:
            self.launcher.done(self.name)
        self.changed()

    def changed(self) -> None:
        """Something shown in status changed (HealthEvents, StandbyOwner)."""
        self.ctx.on_change(self)

    # -- what the arbiter and operators ask for ----------------------------------------

    async def restart(self, cause: str = "operator restart") -> dict:
        """Stop the child (its stop signal, term_grace, SIGKILL) and start it again at once (a program without
        a child: start it); answers the old and the new pid once the new process is spawned."""
        if self._ending:
            raise RuntimeError(f"{self.name}: the watchdog is shutting down")
        old_pid = self.pid
        spawned = asyncio.get_running_loop().create_future()
        self._pid_waiters.append(spawned)
        self.failures.clear()  # the next failure restarts at once again
        self.recoveries.begin("operator", cause, old_pid)
        if self.standby is not None:
            await self.standby.drop_if_stale()  # before the child frees the session for it
        stopping = self._stop_child(Phase.STOPPING_TO_RESTART, self.term_grace)
        if stopping is not None:
            logger.info("{}: {}", self.name, cause)
            await stopping  # its exit starts the next one (on_exit)
        else:
            await self.start()
        new_pid = await asyncio.wait_for(spawned, self.term_grace + 10)
        return {"name": self.name, "old_pid": old_pid, "pid": new_pid, "state": str(self.state)}

    def note_shutdown(self) -> None:
        """From now on an exit ends the program, never restarts it. Only this flag: safe in a signal handler,
        which may interrupt any code (under KillMode=control-group the child may die of the same SIGTERM)."""
        self._ending = True

    def begin_shutdown(self) -> None:
        """Shutdown or reload is coming: no restart, no start, no standby from now on."""
        self._ending = True
        self.failures.cancel_backoff()
        self.launcher.forget(self.name)
        if self.standby is not None:
            self.standby.stop(self.stop_timeout)  # first: once the child ends it would take over

    async def stop(self, cause: str = "shutdown", reload: bool = False) -> None:
        """Shutdown or reload: stop signal, SIGKILL after stop_timeout; the program stays stopped."""
        self._stop_cause = cause
        self.begin_shutdown()
        if self.standby is not None and self.standby.process is not None:
            await self.standby.process.stop(self.stop_timeout)  # already signalled: gone before the child goes
        why = Phase.STOPPING_FOR_RELOAD if reload and self.phase is not Phase.STOPPING_FOR_SHUTDOWN \
            else Phase.STOPPING_FOR_SHUTDOWN
        stopping = self._stop_child(why, self.stop_timeout)
        if stopping is not None:
            await stopping
        elif self.phase in (Phase.BACKOFF, Phase.EXITED, Phase.FAILED):
            self._set(Phase.STOPPED)
        self.tasks.cancel_all()

    def renew_standby(self) -> None:
        """The config file changed and this program did not: its standby is replaced by one that read it."""
        if self.standby is not None:
            self.standby.renew()

    def kill(self) -> None:
        """SIGKILL to the child and the standby now (a second SIGTERM to the watchdog)."""
        standby = self.standby.process if self.standby else None
        for process in (standby, self.child):
            if process is not None and process.running:
                process.signal(signal.SIGKILL)

    # -- starting ------------------------------------------------------------------

    async def start(self) -> None:
        """Start the child (first start, or an operator start of a FAILED program); no-op if it runs."""
        if self.pid is not None:
            return
        self.failures.cancel_backoff()
        await self._stop_leftovers()
        self._launch()

    def _start_soon(self) -> None:
        """Start without a task hop when nothing is left over from an earlier run (the common case)."""
        if self._ending:
            return
        if stale.leftovers(self.program, self.ctx.data_dir, (self.pid, self.standby_pid)):
            self.tasks.run(self.start())
        else:
            self._launch()

    def _launch(self) -> None:
        """Spawn now, or once the watchdog-wide bounds allow (waiting in BACKOFF, so it is not `exited` for long)."""
        if not self.launcher.launch(self.name, self._spawn, restart=self.recoveries.in_progress) \
                and self.phase is Phase.EXITED:
            self._set(Phase.BACKOFF)

    async def _stop_leftovers(self) -> None:
        await stale.stop_leftovers(self.program, self.ctx.data_dir, (self.pid, self.standby_pid),
                                   self.ctx.settings.term_grace, self.records)

    def spawn_process(self, argv: Sequence[str]) -> ChildProcess:
        """Start `argv` as this program's process (StandbyOwner): its environment and cwd, its exit watched;
        forked from the context's template when there is one."""
        env = {**child_env(self.notify.address, self.program.watchdog_sec), **dict(self.program.env)}
        return ChildProcess.spawn(tuple(argv), env, self.on_exit, cwd=self.program.cwd or None,
                                  template=self.ctx.template)

    def _spawn(self) -> None:
        if self._ending or (self.child is not None and self.child.running):
            self.launcher.done(self.name)
            return
        try:
            child = self.spawn_process(self.program.argv)
        except OSError as exc:  # the program itself is missing or not executable: retrying will not help
            self.launcher.done(self.name)
            self._fail(f"cannot start {self.program.argv[0]}: {exc}", "config_failed", pid=None)
            self._spawned(None)
            return
        self.output.attach(child.take_output(), child.pid)
        self._adopt(child)

    def _adopt(self, child: ChildProcess, promoted: bool = False) -> None:
        """`child` (just spawned, or a promoted standby) is now the program's process: arm its checks."""
        self.child = child
        self.health.begin(child)
        self.checks.arm(child)
        self._set(Phase.STARTING)
        logger.info("{} {}, pid {}", self.name, "standby promoted" if promoted else "started", child.pid)
        self.recoveries.restarted(child.pid, child.started_at, promoted)
        self._spawned(child.pid)

    def _spawned(self, pid: int | None) -> None:
        """Tell operator restarts waiting for the new process its pid (None: it could not be started)."""
        for waiter in self._pid_waiters:
            if not waiter.done():
                waiter.set_result(pid)
        self._pid_waiters.clear()

    def _promote_standby(self) -> bool:
        if self.standby is None:
            return False
        taken = self.standby.take(self.recoveries.current.delay, self.output)
        if taken is None:
            return False
        process, self.output = taken
        self.recoveries.delayed(0.0)  # the delay moved to the next standby
        self._adopt(process, promoted=True)
        self.checks.wake()  # it may have said READY=1 before now, while it was not yet ours to hear
        # E.g. the child exited 3: an earlier run's process holds what the standby awaits. Looked for in a task,
        # so the promotion itself (in the exit's callback) reads nothing from /proc.
        self.tasks.run(self._stop_leftovers())
        return True

    # -- what the child says, and its health (HealthEvents) --------------------------------

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

    def answering(self) -> None:
        self._set(Phase.STARTED)

    def became_healthy(self) -> None:
        """Healthy (shown through the change of phase): running, the recovery over, the next standby due."""
        starting = self.state is State.STARTING
        self._set(Phase.HEALTHY)
        if starting and self.child is not None:
            logger.info("{} running, pid {} ({:.2f} s after its start)", self.name, self.child.pid,
                        time.monotonic() - self.child.started_at)
        self.recoveries.healthy(self.pid)
        self.failures.healthy()
        if self.standby is not None:
            self.standby.after_healthy()  # after the start-up, not during it

    def lost_health(self) -> None:
        self._set(Phase.READY)

    # -- stopping, failures and exits --------------------------------------------------------

    def unwell(self, event: str, cause: str) -> None:
        """A check failed (hang, unhealthy, rss_limit): SIGTERM, SIGKILL after term_grace, then restart."""
        child = self.child
        if child is None or not child.running or not self.phase.up:
            return
        logger.warning("{} {}: {}; stopping pid {}", self.name, event, cause, child.pid)
        self.recoveries.begin(event, cause, child.pid)
        self._stop_child(Phase.STOPPING_TO_RECOVER, self.ctx.settings.term_grace)
        self.records.add(event, cause=cause, pid=child.pid)
        self.alerts.fire("hang", f"{self.name} {event}: {cause}; restarting it")

    def _stop_child(self, why: Phase, grace: float) -> asyncio.Task | None:
        """Stop the running child (None: none runs); `why`, a stopping phase, says what its exit leads to.
        Planned stops use the program's stop_signal; a failed check's stop is SIGTERM (SIGCONT with both);
        SIGKILL after `grace`."""
        child = self.child
        if child is None or not child.running:
            return None
        self._stop_began = clock.now_s()
        self.checks.cancel()
        self.health.stopping()
        self.failures.interrupted()
        if not self.phase.stopping:
            self._stopped_while = self.phase
        if self.phase is not why:  # a later stop's purpose overtakes an earlier one's (TRANSITIONS says which)
            self._set(why)
        sig = signal.SIGTERM if why is Phase.STOPPING_TO_RECOVER else self.program.signal_number
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
        self.failures.interrupted()
        code = child.returncode if child.returncode is not None else 0
        cause = exit_cause(code)
        stopping = self.phase.stopping
        after = AFTER_STOP[self.phase] if stopping else After.STAY_STOPPED if self._ending else None
        if self._ending and not stopping:  # it got the stop signal before we sent ours (control-group)
            self.records.add("stop", pid=child.pid, cause="shutdown", message=f"ended by {cause['cause']} during shutdown")
        elif after is not None and after is not After.RECOVER:  # a planned stop, not a failure
            self.records.add("stop", pid=child.pid, message=f"ended by {cause['cause']}", at=self._stop_began,
                             cause=self._stop_cause if after is After.STAY_STOPPED else self.recoveries.current.cause)
        else:
            self.records.add("exit", pid=child.pid, **cause)
        last_words = self.health.exited()
        self._set(Phase.EXITED)
        if after is None:
            logger.warning("{} pid {} exited: {}", self.name, child.pid, cause["cause"])
            self.recoveries.begin("exit", str(cause["cause"]), child.pid)
        outcome = exit_outcome(code, self.recoveries.current.cause if stopping else str(cause["cause"]),
                               self.program.restart, self.program.no_restart_exit_codes, after, last_words,
                               self.hooks.exit_rules)
        if outcome.next is Next.STOP:
            self._set(Phase.STOPPED)
        elif outcome.next is Next.STOP_CLEAN:
            self.recoveries.end()
            self.records.add("stop", pid=child.pid, cause="exited cleanly", message=f"restart = {self.program.restart}")
            self._set(Phase.STOPPED)
        elif outcome.next is Next.RESTART_NOW:
            if not self._promote_standby():
                self._start_soon()
        elif outcome.next is Next.FAIL:
            self._fail(outcome.cause, outcome.rule, pid=child.pid)
        else:
            self._schedule_restart()

    def _schedule_restart(self) -> None:
        """First restart at once; then graduated backoff with jitter (watchdog.core.restart_policy)."""
        recovery = self.recoveries.current
        decision = self.failures.failed(recovery.failed_pid, recovery.cause)
        self.recoveries.delayed(decision.delay)
        if self._promote_standby():
            return
        if decision.delay == 0:
            self._start_soon()
        else:
            self._set(Phase.BACKOFF)
            self.failures.back_off(decision.delay, self._start_soon)

    def _fail(self, cause: str, rule: str, pid: int | None) -> None:
        logger.error("{} failed: {}; not restarting until asked", self.name, cause)
        self.recoveries.failed(cause)
        if self.standby is not None:
            self.standby.stop(self.ctx.settings.term_grace)  # it would take over on its own
        if self.phase is not Phase.FAILED:
            self._set(Phase.FAILED)
        self.records.add("failed", cause=cause, pid=pid)
        self.alerts.fire(rule, f"{self.name} failed: {cause}; not restarting it")

    def close(self) -> None:
        self.records.flush()
        self.checks.close()
        self.failures.close()
        if self.standby is not None:
            self.standby.close()
        self.notify.close()
        self.output.close()
