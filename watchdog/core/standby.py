"""A warm standby: a second instance, fully loaded, that takes over when the program's child ends.

For a program whose hooks give a standby command (the bridge: `--standby`,
which imports everything and then blocks on the session lock). Once the child
is healthy the standby is started; when the child ends (or is stopped for a
failed check) the standby is promoted: the kernel has already handed it the
lock, so recovery skips the cold start. The next standby is started once the
promoted one is healthy, after the delay the restart would have waited, so a
crash loop still backs off. The standby has no checks (it is silent while
waiting) and its own exits never touch the child. It knows its program only
through `StandbyOwner`: a way to spawn, whether the program is running, and
whom to tell about a change.
"""
from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Sequence
from typing import Protocol

from loguru import logger

from watchdog.core import standby_check
from watchdog.core.child import ChildProcess, exit_cause
from watchdog.core.child_output import ChildOutput
from watchdog.shared.logs import standby_log_name
from watchdog.core.restart_policy import RestartPolicy, standby_delay
from watchdog.core.timers import Tasks, Timers


class StandbyOwner(Protocol):
    """What a standby needs of the program it stands by for."""

    @property
    def shutting_down(self) -> bool: ...

    @property
    def is_running(self) -> bool: ...

    def spawn_process(self, argv: Sequence[str]) -> ChildProcess:
        """Start `argv` as the program's process would be (environment, cwd, exit watched); OSError if it cannot."""
        ...

    def changed(self) -> None: ...


class WarmStandby:
    def __init__(self, name: str, argv: tuple[str, ...], owner: StandbyOwner, output: ChildOutput,
                 policy: RestartPolicy, grace: float) -> None:
        self.name = name
        self.argv = argv
        self.owner = owner
        self.policy = policy  # its respawn backoff: the program's steps
        self.grace = grace  # term_grace: its stop signal, then SIGKILL
        self.process: ChildProcess | None = None
        self.output = output  # swapped with the program's on promotion
        self.output.name = standby_log_name(name)
        self.failures = 0  # exits since one was last promoted: its respawn backoff
        self.next_delay = 0.0  # before the next standby: the restart delay of the recovery that used one
        self.stop_planned = False  # we are stopping it (shutdown, failed, reload): no respawn
        self._renewing = False  # stopped to be replaced by one that has read the config as it is now
        self._timers = Timers()
        self._tasks = Tasks(name)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process and self.process.running else None

    def after_healthy(self) -> None:
        """The child is healthy: start a standby (after the pending delay), unless one runs or is due."""
        if self.pid is None and self._timers.remaining("spawn") is None:
            self._schedule(self.next_delay)
            self.next_delay = 0.0

    def _schedule(self, delay: float) -> None:
        self._timers.schedule("spawn", delay, self._spawn)

    def _spawn(self) -> None:
        if self.owner.shutting_down or self.pid is not None or not self.owner.is_running:
            return  # not now: the next time the child is healthy schedules it again
        try:
            process = self.owner.spawn_process(self.argv)
        except OSError as exc:
            logger.error("{}: cannot start a standby: {}", self.name, exc)
            return
        self.process = process
        self.stop_planned = False
        self.output.attach(process.take_output(), process.pid)
        logger.info("{} standby started, pid {}", self.name, process.pid)
        self.owner.changed()

    def take(self, delay: float, output: ChildOutput) -> tuple[ChildProcess, ChildOutput] | None:
        """The child has ended: hand over a live standby and its output (named as the program's), or None.

        `output` (the ended child's) becomes the next standby's; the restart delay the recovery would have
        waited moves to the next standby.
        """
        process = self.process
        if process is None or not process.running or self.stop_planned or self.owner.shutting_down:
            return None
        if standby_check.is_stale(process, self.argv):  # it may hold the lock already: gone before the cold start
            logger.info("{}: standby pid {} predates the config file's last change; starting cold instead",
                        self.name, process.pid)
            self.stop_planned = True
            process.signal(signal.SIGKILL)
            return None
        self.process = None
        self._timers.cancel_all()
        self.failures = 0
        self.next_delay = delay
        process.started_at = time.monotonic()  # as the program's process it starts now: uptime, probe start-up
        output.detach()
        taken, self.output = self.output, output
        taken.name, self.output.name = self.name, standby_log_name(self.name)
        return process, taken

    async def drop_if_stale(self) -> None:
        """Before an operator restart: a standby older than the config file is stopped, so the restart
        is a cold start with the file as it is now (one restart applies a config change)."""
        if self.process is not None and standby_check.is_stale(self.process, self.argv):
            logger.info("{}: standby pid {} predates the config file's last change; stopping it first",
                        self.name, self.process.pid)
            stopping = self.stop(self.grace)
            if stopping is not None:
                await stopping

    def ended(self, process: ChildProcess) -> None:
        """The standby exited on its own (or was stopped): the child is not affected; respawn with backoff."""
        self.process = None
        self.output.detach()
        self.owner.changed()
        cause = exit_cause(process.returncode if process.returncode is not None else 0)["cause"]
        if self._renewing and not self.owner.shutting_down:
            self._renewing = False
            logger.info("{} standby pid {} stopped ({}) to be renewed", self.name, process.pid, cause)
            self._schedule(0.0)
            return
        if self.owner.shutting_down or self.stop_planned:
            logger.info("{} standby pid {} stopped ({})", self.name, process.pid, cause)
            return
        self.failures += 1
        delay = standby_delay(self.failures, self.policy, random.random())
        logger.warning("{} standby pid {} exited: {}; a new one in {:.2f} s", self.name, process.pid, cause, delay)
        self._schedule(delay)

    def renew(self) -> None:
        """The config file changed (a reload that left this program alone): replace the standby by one that has
        read it, so the next takeover stays warm. It holds nothing while waiting: the child is not disturbed."""
        if self.pid is not None and not self.stop_planned:
            self._renewing = True
            self.stop(self.grace)  # never promoted while it goes; a new one follows (ended)

    def stop(self, grace: float) -> asyncio.Task | None:
        """Stop signal to the standby (SIGKILL after `grace`); it holds nothing, so this never disturbs the child."""
        self._timers.cancel_all()
        process = self.process
        if process is None or not process.running:
            return None
        self.stop_planned = True
        return self._tasks.run(process.stop(grace))

    def close(self) -> None:
        self._timers.cancel_all()
        self._tasks.cancel_all()
        self.output.detach()
