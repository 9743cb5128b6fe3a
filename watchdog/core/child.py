"""One child process: its own process group, a clean environment, and its exit seen the moment it happens.

Exit detection uses a pidfd registered with the event loop: the kernel makes it
readable when the process ends, so there is no polling tick between a crash and
the restart (supervisord and circus check once a second). Signals go to the
whole process group, so anything the child started goes with it.
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol
from watchdog.shared import clock

STOP_SIGNAL = signal.SIGTERM  # what stop() sends unless told otherwise (a program's stop_signal)
NOT_INHERITED = ("NOTIFY_SOCKET", "WATCHDOG_")  # systemd's socket and timers belong to the watchdog, not its children


def child_env(notify_socket: str, watchdog_sec: float, base: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The watchdog's environment minus systemd's notify variables, plus the child's own socket and interval."""
    env = {k: v for k, v in base.items() if not k.startswith(NOT_INHERITED)}
    env["NOTIFY_SOCKET"] = notify_socket
    if watchdog_sec > 0:  # 0 = no heartbeat expected, as with systemd's WatchdogSec=0
        env["WATCHDOG_USEC"] = str(int(watchdog_sec * 1_000_000))
    env["PYTHONUNBUFFERED"] = "1"  # output lines reach the log as they happen, not when a buffer fills
    return env


def exit_cause(returncode: int) -> dict[str, object]:
    """Recovery-log fields for an exit: cause "SIGKILL" plus signal, or "exit code 1" plus exit_code."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return {"cause": name, "signal": name}
    return {"cause": f"exit code {returncode}", "exit_code": returncode}


def watch_exit(pid: int, callback: Callable[[], None]) -> Callable[[], None]:
    """Call `callback` once, from the event loop, when process `pid` ends (any process, not only children).

    Returns a function that cancels the watch. If the process is already gone, the callback runs soon.
    """
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        handle = loop.call_soon(callback)
        return handle.cancel

    watching = True

    def cancel() -> None:
        nonlocal watching
        if watching:  # closing twice could close an unrelated descriptor that reused the number
            watching = False
            loop.remove_reader(pidfd)
            os.close(pidfd)

    def readable() -> None:
        cancel()
        callback()

    loop.add_reader(pidfd, readable)
    return cancel


async def wait_gone(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` for process `pid` to end; True if it did."""
    ended = asyncio.get_running_loop().create_future()
    cancel = watch_exit(pid, lambda: ended.done() or ended.set_result(None))
    try:
        await asyncio.wait_for(ended, timeout)
        return True
    except asyncio.TimeoutError:
        cancel()
        return False


class Template(Protocol):
    """What ChildProcess.spawn asks first when the watchdog runs a template (watchdog/core/forkserver.py)."""

    def fork(self, argv: Sequence[str], env: Mapping[str, str], cwd: str | None) -> tuple[int, int] | None:
        """(pid, read end of the output pipe) of the forked child; None: start it by exec."""

    def track(self, pid: int) -> None:
        """A child was started (either way): its process group's orphans come to the watchdog."""

    def ended(self, pid: int) -> None:
        """That child has ended and is reaped."""


def _reap(pid: int) -> int:
    """waitpid for a forked child, as a Popen.returncode: the exit code, or -N for death by signal N."""
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


class ChildProcess:
    """A spawned child: pid, exit future, and signals to its process group.

    `forked` says how it was started: from the pre-loaded template, or by exec (`popen` is then its Popen).
    """

    def __init__(self, pid: int, output: int, reap: Callable[[], int], on_exit: Callable[[ChildProcess], None],
                 popen: subprocess.Popen | None = None, template: Template | None = None) -> None:
        self.pid = pid
        self.popen = popen
        self.forked = popen is None
        self.started_at = time.monotonic()
        self.returncode: int | None = None
        self.exited_at: float | None = None  # epoch seconds the pidfd fired (handed to the next process)
        self.exited = asyncio.get_running_loop().create_future()
        self._output: int | None = output
        self._reap = reap
        self._on_exit = on_exit
        self._template = template
        if self._template is not None:
            self._template.track(pid)
        watch_exit(self.pid, self._ended)

    @classmethod
    def spawn(cls, argv: Sequence[str], env: Mapping[str, str], on_exit: Callable[[ChildProcess], None],
              cwd: str | None = None, template: Template | None = None) -> ChildProcess:
        """Start `argv` in a new session (so its own process group); stdout and stderr share one pipe.

        Forked from `template` when one is given and it can run `argv`, else exec'd (Popen).
        """
        forked = template.fork(argv, env, cwd) if template is not None else None
        if forked is not None:
            pid, output = forked
            return cls(pid, output, lambda: _reap(pid), on_exit, template=template)
        popen = subprocess.Popen(list(argv), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        assert popen.stdout is not None
        output = os.dup(popen.stdout.fileno())
        popen.stdout.close()
        popen.stdout = None
        return cls(popen.pid, output, popen.wait, on_exit, popen, template)

    def take_output(self) -> int:
        """The read end of the child's output pipe as a bare fd; the caller owns (and closes) it."""
        assert self._output is not None, "the output was taken already"
        fd, self._output = self._output, None
        return fd

    @property
    def running(self) -> bool:
        return self.returncode is None

    def _ended(self) -> None:
        self.exited_at = clock.now_s()
        self.returncode = self._reap()  # reaps at once: the pidfd said it has ended
        self.signal(signal.SIGKILL)  # whatever the child left behind in its group goes with it
        if self._template is not None:
            self._template.ended(self.pid)
        self.exited.set_result(self.returncode)
        self._on_exit(self)

    def signal(self, sig: int) -> None:
        """Send `sig` to the child's process group (its pid is the group id)."""
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def terminate(self, sig: int = STOP_SIGNAL) -> None:
        """`sig` (SIGTERM, or the program's stop_signal), then SIGCONT so that a stopped (SIGSTOP) child can act on it."""
        self.signal(sig)
        self.signal(signal.SIGCONT)

    async def stop(self, grace: float, sig: int = STOP_SIGNAL) -> int:
        """`sig`, wait up to `grace` seconds, then SIGKILL; returns the exit status."""
        if self.running:
            self.terminate(sig)
            try:
                await asyncio.wait_for(asyncio.shield(self.exited), grace)
            except asyncio.TimeoutError:
                self.signal(signal.SIGKILL)
        return await self.exited
