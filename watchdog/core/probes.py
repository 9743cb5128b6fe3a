"""What the watchdog can learn about a child from outside: an HTTP or TCP answer, /proc state and CPU time, memory.

Each probed check kind (watchdog/shared/check_kinds.py) names its probe here:
an `async (Check, Target) -> HealthResult`, found by `probe_for(kind)`.

A probe answer is classified, not just "up or down": OK, a FAILURE (counts
towards the check's failure_threshold), OVERLOADED (our API's connection cap
answered: the program is alive and busy, which no restart would cure), or,
where the program's hooks say so (the bridge: WhatsApp unreachable), an
OUTAGE (the program is fine, its upstream is not: no restart) or an OPERATOR
case (alert, no restart).
"""
from __future__ import annotations

import asyncio
import functools
import importlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil

from watchdog.shared import check_kinds, endpoints
from watchdog.shared.http_server import SHED_HEADER
from watchdog.shared.programs import Check

OK = "ok"
OUTAGE = "outage"  # the program is fine, something it depends on is not: do not restart
OPERATOR = "operator"  # needs a person: alert, do not restart
FAILURE = "failure"  # no answer, timeout, a wrong status: counts towards failure_threshold
OVERLOADED = "overloaded"  # shed by the connection cap: alive and busy; shown, never a restart

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class HealthResult:
    kind: str
    state: str  # the program's own word for it, or what went wrong ("timeout", "connection refused", ...)
    detail: str = ""
    outage_started_at: float | None = None  # epoch seconds the outage began, when the program says
    body: dict | None = None  # the decoded answer, when the program's hooks read one


Classifier = Callable[[int, bytes], HealthResult]


def expect_status(expected: int) -> Classifier:
    """The default classification: the expected HTTP status is OK, anything else a failure."""
    def classify(status: int, body: bytes) -> HealthResult:
        return HealthResult(OK, "ok") if status == expected else \
            HealthResult(FAILURE, f"HTTP {status}", f"expected {expected}")
    return classify


@dataclass(frozen=True)
class Target:
    """What a probe may need besides its Check: the child it looks at and the watchdog's means of looking."""

    name: str  # the program
    pid: int  # its current child
    data_dir: Path  # where it publishes its endpoints (run/<name>.json)
    http: aiohttp.ClientSession
    classify: Classifier  # how its hooks read an HTTP answer


Probe = Callable[[Check, Target], Awaitable[HealthResult]]


@functools.cache
def probe_for(kind: str) -> Probe | None:
    """The probe a check kind registered (None: the kind is not probed, as `notify` and `started`)."""
    registered = check_kinds.get(kind)
    if registered is None or not registered.probe:
        return None
    module, _, function = registered.probe.partition(":")
    return getattr(importlib.import_module(module), function)


async def http_check(check: Check, target: Target) -> HealthResult:
    """An `http` check: the program's own health socket first, else its URL or its published endpoint + path."""
    if check.socket:  # the program's own socket: no competing for the public API's connections
        result = await probe_http(target.http, "http://localhost" + check.path, check.timeout, target.classify,
                                  check.token, check.socket)
        if result.state != "connection refused":  # not serving it (yet): its published API instead
            return result
    url = check.url
    if check.endpoint:
        record = endpoints.read(target.data_dir, target.name)
        base = record["endpoints"].get(check.endpoint) if record and record.get("pid") == target.pid else None
        if base is None:  # nothing yet, or what the previous instance published
            return HealthResult(FAILURE, "no endpoint", f"no {check.endpoint!r} endpoint published yet")
        url = base.rstrip("/") + check.path
    return await probe_http(target.http, url, check.timeout, target.classify, check.token)


async def tcp_check(check: Check, target: Target) -> HealthResult:
    """A `tcp` check: its host:port accepts a connection."""
    return await probe_tcp(check.host, check.port, check.timeout)


async def probe_http(session: aiohttp.ClientSession, url: str, timeout: float, classify: Classifier,
                     token: str = "", unix_socket: str = "") -> HealthResult:
    """GET `url` within `timeout` seconds (with a bearer token when given) and classify the answer; over the
    unix socket `unix_socket` when given (a session of its own: a connector serves one socket).

    Each probe on a new connection (`Connection: close`, so none is pooled): a server that can no longer
    accept connections (descriptors exhausted) must fail its probe even while an old pooled connection would
    still be served. The 503 of a connection cap (SHED_HEADER) is OVERLOADED, not a failure.
    """
    if unix_socket:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=unix_socket)) as own:
            return await probe_http(own, url, timeout, classify, token)
    headers = {"Connection": "close", **({"Authorization": f"Bearer {token}"} if token else {})}
    try:
        async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout),
                               allow_redirects=False) as response:
            if response.status == 503 and SHED_HEADER in response.headers:
                return HealthResult(OVERLOADED, "overloaded", f"at its limit of {response.headers[SHED_HEADER]} "
                                                              "connections, shedding new ones with 503")
            return classify(response.status, await response.read())
    except asyncio.TimeoutError:
        return HealthResult(FAILURE, "timeout", f"no answer within {timeout:g} s")
    except aiohttp.ClientConnectorError as exc:
        return HealthResult(FAILURE, "connection refused", str(exc.os_error or exc))
    except aiohttp.ClientError as exc:
        return HealthResult(FAILURE, "no answer", f"{type(exc).__name__}: {exc}")


async def probe_tcp(host: str, port: int, timeout: float) -> HealthResult:
    """Connect to host:port within `timeout`; OK if it accepts."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except asyncio.TimeoutError:
        return HealthResult(FAILURE, "timeout", f"no connection within {timeout:g} s")
    except OSError as exc:
        return HealthResult(FAILURE, "connection refused", str(exc))
    writer.close()
    return HealthResult(OK, "ok")


@dataclass(frozen=True)
class ProcSample:
    """One look at /proc/<pid>/stat: the scheduler state letter and CPU time used so far."""

    at: float  # monotonic
    state: str  # R running/runnable, S sleeping, D disk, T stopped, t traced, Z zombie
    cpu_s: float  # utime + stime


def proc_sample(pid: int, now: float) -> ProcSample | None:
    """Read /proc/<pid>/stat; None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    return ProcSample(now, fields[0], (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)


def is_stopped(pid: int) -> bool:
    """True if the process is frozen by SIGSTOP: it cannot answer, however long we wait.

    A tracing stop (strace, a debugger) does not count: an operator is looking at it.
    """
    sample = proc_sample(pid, 0.0)
    return sample is not None and sample.state == "T"


def rss_bytes(pid: int) -> int | None:
    """Resident memory of a process and all its descendants; None if it is gone."""
    try:
        process = psutil.Process(pid)
        total = process.memory_info().rss
        for child in process.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                continue
        return total
    except psutil.Error:
        return None
