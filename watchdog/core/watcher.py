"""One supervised program for the life of the watchdog, across any number of child processes.

The watcher is the program's lifecycle: it owns the state machine
(watchdog/core/states.py: every phase that decides what happens next, every
change through one checked transition) and the current child. This module
starts the child, takes the operator's and the arbiter's requests and hears
the child's verdicts; watcher_exits.py stops it (a failed check, an operator
restart, shutdown, reload: the stopping phase says what the exit leads to) and
acts on its exit; watcher_view.py is what others read (status, overdue). Each
part does one job, gets only what it needs and tells the watcher its verdicts:
ChildHealth (answering, healthy, not healthy), Checks (`unwell` when one
fails), FailureHistory (failures, backoff, crash loop; the pure restart_policy
decides), WarmStandby, Recoveries (the records), ProgramAlerts, the start
bounds (throttle.py). It knows a `Program` and its hooks, never what kind of
program it is. Everything is driven by events on the event loop: the child's
exit (pidfd), its sd_notify datagrams, timers.
"""
from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Sequence

from loguru import logger

from watchdog.core import hooks
from watchdog.core import stale
from watchdog.core.child_checks import Checks
from watchdog.core.child import ChildProcess, child_env
from watchdog.core.child_health import ChildHealth
from watchdog.core.child_output import ChildOutput, RotatingFile, log_path
from watchdog.core.context import Context
from watchdog.core.failure_history import FailureHistory
from watchdog.core.notify_server import Notification, NotifyServer
from watchdog.core.program_alerts import ProgramAlerts
from watchdog.shared.programs import Program
from watchdog.core.recovery import Recoveries, Records
from watchdog.core.restart_policy import RestartPolicy
from watchdog.core.standby import WarmStandby
from watchdog.core.states import Phase, State, program_machine
from watchdog.core.throttle import Launcher
from watchdog.core.timers import Tasks
from watchdog.core.watcher_exits import WatcherExits


class Watcher(WatcherExits):
    """One program: its phase and child; starting, operator requests, health verdicts; the parts do the rest."""

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

    def close(self) -> None:
        self.records.flush()
        self.checks.close()
        self.failures.close()
        if self.standby is not None:
            self.standby.close()
        self.notify.close()
        self.output.close()
