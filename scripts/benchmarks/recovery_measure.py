"""The recovery benchmark's measurements, the same for every supervisor: the bridge's health polled on a
keep-alive connection, SIGKILL -> a new healthy pid, SIGSTOP -> a new healthy pid (or never)."""
from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from scripts.benchmarks.recovery_procs import BenchError, Started, log_tail


POLL_INTERVAL = 0.003  # seconds between health polls
POLL_TIMEOUT = 0.5  # per health request: a stopped bridge accepts the connection but never answers


@dataclass
class Result:
    supervisor: str
    kills_ms: list[float] = field(default_factory=list)
    hangs_ms: list[float | None] = field(default_factory=list)  # None: never replaced within hang_wait
    hang_wait: float = 0.0
    notes: list[str] = field(default_factory=list)
    error: str = ""


class HealthPoller:
    """GET /api/health on one kept-alive HTTP connection; reconnects after any error."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._conn: http.client.HTTPConnection | None = None

    def get(self) -> tuple[int, dict] | None:
        """(status, body) or None when nothing answered."""
        try:
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=POLL_TIMEOUT)
            self._conn.request("GET", "/api/health")
            response = self._conn.getresponse()
            raw = response.read()
            try:
                body = json.loads(raw)
            except ValueError:
                body = {}
            return response.status, body if isinstance(body, dict) else {}
        except (OSError, http.client.HTTPException):
            self.close()
            return None

    def healthy_pid(self) -> int | None:
        """The pid of a bridge answering 200, else None."""
        answer = self.get()
        if answer and answer[0] == 200 and isinstance(answer[1].get("pid"), int):
            return answer[1]["pid"]
        return None

    def wait_healthy(self, timeout: float, not_pid: int | None = None) -> tuple[int, float] | None:
        """Poll until a bridge with a pid other than `not_pid` answers 200: (pid, monotonic time) or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.healthy_pid()
            if pid is not None and pid != not_pid:
                return pid, time.monotonic()
            time.sleep(POLL_INTERVAL)
        return None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def settled_pid(poller: HealthPoller, settle: float, timeout: float, what: str) -> int:
    """Wait until one bridge pid has answered 200 continuously for `settle` seconds."""
    deadline = time.monotonic() + timeout
    pid, since = None, time.monotonic()
    while time.monotonic() < deadline:
        current = poller.healthy_pid()
        if current is None or current != pid:
            pid, since = current, time.monotonic()
        elif time.monotonic() - since >= settle:
            return pid
        time.sleep(0.02)
    raise BenchError(f"{what}: the bridge was not healthy and settled ({settle:g} s) within {timeout:g} s")


def measure_kills(poller: HealthPoller, kills: int, settle: float, recover_timeout: float, what: str,
                  log: Callable[[str], None]) -> list[float]:
    samples = []
    for i in range(kills):
        pid = settled_pid(poller, settle, recover_timeout, what)
        started = time.monotonic()
        send(pid, signal.SIGKILL, what)
        poller.close()
        back = poller.wait_healthy(recover_timeout, not_pid=pid)
        if back is None:
            raise BenchError(f"{what}: no new healthy bridge within {recover_timeout:g} s of SIGKILL #{i + 1} (pid {pid})")
        samples.append((back[1] - started) * 1000)
        log(f"{what}: kill {i + 1}/{kills}: pid {pid} -> {back[0]} healthy after {samples[-1]:.0f} ms")
    return samples


def measure_hangs(poller: HealthPoller, args: argparse.Namespace, what: str,
                  log: Callable[[str], None], result: Result) -> list[float | None]:
    """SIGSTOP the bridge; a supervisor that never replaces it is tried once (it does not look), then resumed.

    The stop lands at a random (seeded) phase of the bridge's heartbeat period, so neither a lucky nor an
    unlucky phase is measured every time.
    """
    samples: list[float | None] = []
    hangs, wait = args.hangs, args.hang_wait
    phases = random.Random(1)
    for i in range(hangs):
        settle = args.hang_settle + phases.uniform(0, args.hang_phase)
        pid = settled_pid(poller, settle, settle + 30, what)
        started = time.monotonic()
        send(pid, signal.SIGSTOP, what)
        poller.close()
        back = poller.wait_healthy(wait, not_pid=pid)
        if back is None:
            samples.append(None)
            log(f"{what}: hang {i + 1}/{hangs}: pid {pid} stopped, never replaced (waited {wait:g} s); resuming it")
            _resume(pid)
            if i + 1 < hangs:
                result.notes.append(f"hang not detected on try 1 of {hangs}; further tries skipped")
            break
        samples.append((back[1] - started) * 1000)
        if alive(pid):
            result.notes.append(f"hang {i + 1}: stopped pid {pid} still alive after its replacement was healthy")
            _resume(pid)
        log(f"{what}: hang {i + 1}/{hangs}: pid {pid} -> {back[0]} healthy after {samples[-1]:.0f} ms")
    return samples


def send(pid: int, sig: signal.Signals, what: str) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        raise BenchError(f"{what}: bridge pid {pid} vanished between its health answer and {sig.name}") from None


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _resume(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


def measure(poller: HealthPoller, args: argparse.Namespace, result: Result, log: Callable[[str], None]) -> None:
    what = result.supervisor
    result.notes.append(f"load average {os.getloadavg()[0]:.1f} at its start")
    settled_pid(poller, args.settle, args.start_timeout, what)
    result.kills_ms = measure_kills(poller, args.kills, args.settle, args.recover_timeout, what, log)
    result.hang_wait = args.hang_wait
    result.hangs_ms = measure_hangs(poller, args, what, log, result)


def start_and_measure(args: argparse.Namespace, result: Result, started: "Started", poller: HealthPoller,
                      argv: list[str], out_path: Path, logs: list[Path], log: Callable[[str], None]) -> None:
    """Start a supervisor, wait until its bridge has settled, then measure; a failed start names its logs."""
    proc = started.start(argv, out_path)
    try:
        settled_pid(poller, args.settle, args.start_timeout, result.supervisor)
    except BenchError as exc:
        state = "running" if proc.poll() is None else f"exited with code {proc.returncode}"
        raise BenchError(f"{exc} ({result.supervisor} {state}); " + "; ".join(log_tail(p) for p in logs)) from None
    measure(poller, args, result, log)


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]
