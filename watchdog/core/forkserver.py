"""The watchdog's end of the pre-loaded template (watchdog/core/template.py): fork our components from it.

A cold start of one of our components is a new interpreter plus its imports
(~0.4 s of CPU); forked from the template it is a fork plus the component's
own set-up, and the imported code stays shared between all children. The
child is still the watchdog's own child (the watchdog is a child subreaper
and the template double-forks), so exit status, pidfd exit detection,
process-group signals and leftover cleanup are those of an exec'd child.

Anything the template cannot run (a foreign program, a bridge on neonize)
is answered `exec`, and so is every spawn while the template is down: then
`ChildProcess.spawn` starts the child the old way. A template that dies is
logged in the recovery log (component `template`) and started again with
backoff; a template that does not answer within SPAWN_TIMEOUT is killed.
"""
from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

from loguru import logger

from watchdog.core import template
from watchdog.core.child import exit_cause, wait_gone, watch_exit
from watchdog.shared.recovery_log import RecoveryLog

COMPONENT = "template"  # its name in the recovery log
# What the template is, for an operator reading the recovery log (who need not know what a fork server is).
READY_TEXT = "components start as copies of this already-loaded process (in milliseconds, not ~0.4 s each)"
PR_SET_CHILD_SUBREAPER = 36
READY_TIMEOUT = 15.0  # imports under load; children exec until it is ready
SPAWN_TIMEOUT = 2.0  # a fork takes milliseconds: longer means the template is stuck
RESTART_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)  # after each consecutive failure
STABLE_AFTER = 60.0  # up this long: the next failure starts the delays over
ORPHAN_GROUPS_KEPT = 60.0  # seconds an ended child's process group is still reaped for orphans


def set_subreaper(on: bool) -> bool:
    """PR_SET_CHILD_SUBREAPER: orphaned descendants (the template's forked children) become our children."""
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0


class OrphanReaper:
    """Reaps what a subreaper inherits besides its children: orphans left in a child's process group.

    Only zombies in the process groups of our own children are reaped, and never the group's
    leader (the child itself, reaped by its ChildProcess), so no other waitpid loses its status.
    """

    def __init__(self) -> None:
        self.groups: dict[int, float | None] = {}  # pgid -> when its leader ended (None: still running)

    def track(self, pid: int) -> None:
        self.groups[pid] = None

    def ended(self, pid: int) -> None:
        if pid in self.groups:
            self.groups[pid] = time.monotonic()
            self.reap()  # orphans that died before their leader was reaped sent no SIGCHLD of their own

    def reap(self) -> int:
        """Reap every zombie orphan in our children's groups; returns how many."""
        reaped = 0
        now = time.monotonic()
        for group, ended in list(self.groups.items()):
            if ended is not None and now - ended > ORPHAN_GROUPS_KEPT:
                del self.groups[group]
                continue
            while True:
                try:
                    info = os.waitid(os.P_PGID, group, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                except ChildProcessError:
                    break
                if info is None or info.si_pid == group:  # the leader is its ChildProcess's to reap
                    break
                os.waitpid(info.si_pid, os.WNOHANG)
                reaped += 1
        return reaped


class ForkServer:
    """Starts the template, forks children from it, notices its death and starts it again."""

    def __init__(self, recovery_log: RecoveryLog, env: Mapping[str, str] | None = None,
                 preload: Sequence[str] = ()) -> None:
        """`preload`: modules the template imports ahead besides the entry point (the slices' `preload`)."""
        self.recovery_log = recovery_log
        self.preload = tuple(preload)
        self.env = dict(os.environ if env is None else env)
        self.reaper = OrphanReaper()
        self.pid: int | None = None  # the template's, once it said ready
        self._popen: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._cancel_watch = lambda: None
        self._failures = 0
        self._started_at = 0.0
        self._restart: asyncio.TimerHandle | None = None
        self._closed = False
        self._subreaper = False
        self._kill_cause = ""  # why we killed it, for the record of its death
        self._outage: tuple[float, int | None, str] | None = None  # since (monotonic), pid, cause: no template

    @property
    def ready(self) -> bool:
        return self.pid is not None

    async def start(self) -> bool:
        """Become a subreaper and start the template; True once it is ready (else children exec)."""
        if not self._subreaper:
            if not set_subreaper(True):
                self._record("failed", cause=f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}",
                             message="children start by exec")
                return False
            self._subreaper = True
            asyncio.get_running_loop().add_signal_handler(signal.SIGCHLD, self.reaper.reap)
        return await self._launch()

    async def _launch(self) -> bool:
        self._restart = None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [sys.executable, "-m", "watchdog.core.template", str(theirs.fileno()), str(os.getpid()),
                ",".join(self.preload), " " * template.ARGV_ROOM]
        try:
            popen = subprocess.Popen(argv, env={**self.env, "PYTHONUNBUFFERED": "1"}, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, pass_fds=(theirs.fileno(),), start_new_session=True)
        except OSError as exc:
            ours.close()
            theirs.close()
            self._failed(f"cannot start the template: {exc}", None)
            return False
        finally:
            theirs.close()
        self._popen, self._sock, self._started_at = popen, ours, time.monotonic()
        if self._outage is not None:
            since, pid, cause = self._outage
            self._record("restart", pid=pid, new_pid=popen.pid, cause=cause,
                         delay_ms=round((time.monotonic() - since) * 1000, 1))
        self._cancel_watch = watch_exit(popen.pid, lambda: self._died(popen))
        loop = asyncio.get_running_loop()
        ours.setblocking(False)
        try:
            data = await asyncio.wait_for(loop.sock_recv(ours, template.MAX_MESSAGE), READY_TIMEOUT)
        except (asyncio.TimeoutError, OSError):
            data = b""
        if self._popen is not popen:  # it died while we waited (_died ran)
            return False
        if not data:
            self._kill(f"not ready within {READY_TIMEOUT:g} s")
            return False
        ours.setblocking(True)
        ours.settimeout(SPAWN_TIMEOUT)
        self.pid = popen.pid
        logger.info("template pid {} ready: {}", popen.pid, READY_TEXT)
        if self._outage is None:
            self._record("start", pid=popen.pid, message=f"ready: {READY_TEXT}")
        else:
            since, _, cause = self._outage
            self._record("healthy", pid=popen.pid, cause=cause, downtime_ms=round((time.monotonic() - since) * 1000, 1),
                         message=f"ready again: {READY_TEXT}")
            self._outage = None
        return True

    def fork(self, argv: Sequence[str], env: Mapping[str, str], cwd: str | None) -> tuple[int, int] | None:
        """Fork `argv` from the template: (pid, read end of its output pipe), or None to start it by exec."""
        if self._sock is None or self.pid is None or not template.is_ours(argv):
            return None
        output_r, output_w = os.pipe2(os.O_CLOEXEC)
        try:
            template.send(self._sock, {"argv": list(argv), "env": dict(env), "cwd": cwd}, [output_w])
            answer, _ = template.receive(self._sock)
        except (OSError, ValueError) as exc:  # socket.timeout is an OSError
            answer = None
            self._kill(f"spawn request failed: {exc or 'no answer in time'}")
        finally:
            os.close(output_w)
        if not answer or "pid" not in answer:
            os.close(output_r)
            if answer and answer.get("exec"):
                logger.debug("{}: started by exec: {}", argv[3], answer["exec"])
            return None
        return answer["pid"], output_r

    def track(self, pid: int) -> None:
        self.reaper.track(pid)

    def ended(self, pid: int) -> None:
        self.reaper.ended(pid)

    def _kill(self, cause: str) -> None:
        """The template is stuck or broken: kill it (its death is handled as any other)."""
        popen = self._popen
        if popen is not None and popen.poll() is None:
            logger.error("template pid {}: {}; killing it", popen.pid, cause)
            self._kill_cause, self.pid = cause, None
            popen.kill()

    def _died(self, popen: subprocess.Popen) -> None:
        if popen is not self._popen:
            return
        returncode = popen.wait()
        cause = self._kill_cause or str(exit_cause(returncode)["cause"])
        self._kill_cause = ""
        self._forget()
        if self._closed:
            return
        self._failed(cause, popen.pid)

    def _failed(self, cause: str, pid: int | None) -> None:
        if time.monotonic() - self._started_at > STABLE_AFTER:
            self._failures = 0
        delay = RESTART_DELAYS[min(self._failures, len(RESTART_DELAYS) - 1)]
        self._failures += 1
        logger.error("template {}: {}; children start by exec, template restarted in {:g} s", pid or "", cause, delay)
        if self._outage is None:
            self._outage = (time.monotonic(), pid, cause)
        self._record("exit", pid=pid, cause=cause,
                     message=f"children start by exec until the template is back (restart in {delay:g} s)")
        self._restart = asyncio.get_running_loop().call_later(
            delay, lambda: asyncio.get_running_loop().create_task(self._launch()))

    def _forget(self) -> None:
        self._cancel_watch()
        self._cancel_watch = lambda: None
        if self._sock is not None:
            self._sock.close()
        self._sock = self._popen = self.pid = None

    def _record(self, event: str, **fields: object) -> None:
        try:
            self.recovery_log.append(COMPONENT, event, **fields)
        except OSError as exc:
            logger.error("template: recovery log not written ({}): {}", event, exc)

    async def close(self) -> None:
        """Stop the template (its socket closed, it exits) and stop being a subreaper."""
        self._closed = True
        if self._restart is not None:
            self._restart.cancel()
        popen = self._popen
        self._forget()
        if popen is not None:
            if not await wait_gone(popen.pid, 2.0):
                popen.kill()
            popen.wait()
        if self._subreaper:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGCHLD)
            self.reaper.reap()
            set_subreaper(False)
            self._subreaper = False
