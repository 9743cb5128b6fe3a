"""The kinds of readiness and liveness check: each registered once, with how its config value reads and its probe.

Why a registry: a kind used to be a string compared wherever checks were
parsed, described or run. Now `[[programs]]` validation (programs.py), a
check's description and the core's probe loop (watchdog/core/child_checks.py)
all read this table. A new probed kind is its probe function in
watchdog/core/probes.py and one `register(...)` line here (recipe:
docs/ARCHITECTURE.md, "Add a health-check kind").

`notify` and `started` are no probes: READY=1 and running long enough are
signs the core reads itself (the notify socket, a timer); they are registered
so that config validation and descriptions know them like any other kind.

Kept free of imports beyond the standard library: every child loads the config
(and so this module) on each cold start; a probe is named `"module:function"`
and imported only by the watchdog when it arms one.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

NOTIFY = "notify"
STARTED = "started"


@dataclass(frozen=True)
class CheckKind:
    name: str
    parse: Callable[[object], dict[str, Any]]  # the config value -> Check fields; ValueError(problem) if bad
    describe: Callable[[Any], str]  # a Check of this kind -> what it looks at, for logs and causes
    probe: str = ""  # "module:function" of its probe (watchdog/core/probes.py); "" = not probed
    bare: object = None  # its value when named alone (`ready = "notify"`); None = it needs a value


_KINDS: dict[str, CheckKind] = {}


def register(kind: CheckKind) -> CheckKind:
    """Register a kind (once: a second definition of a name is a programming error)."""
    if kind.name in _KINDS:
        raise ValueError(f"check kind {kind.name!r} is registered twice")
    _KINDS[kind.name] = kind
    return kind


def get(name: str) -> CheckKind | None:
    return _KINDS.get(name)


def names(probed_only: bool = False) -> tuple[str, ...]:
    """Every registered kind in the order registered; `probed_only`: those a liveness check can use."""
    return tuple(name for name, kind in _KINDS.items() if kind.probe or not probed_only)


# -- how the built-in kinds' config values read ---------------------------------------------


def _url(value: object) -> dict[str, Any]:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise ValueError(f"expected an http(s) URL, got {value!r}")
    return {"url": value}


def _host_port(value: object) -> dict[str, Any]:
    host, sep, port = str(value).rpartition(":")
    if not isinstance(value, str) or not sep or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"expected \"host:port\", got {value!r}")
    return {"host": host.strip("[]") or "127.0.0.1", "port": int(port)}


def _seconds(value: object) -> dict[str, Any]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"expected seconds (0 or more), got {value!r}")
    return {"seconds": float(value)}


def _true(value: object) -> dict[str, Any]:
    if value is not True:
        raise ValueError(f"expected true, got {value!r}")
    return {}


register(CheckKind(NOTIFY, _true, lambda check: NOTIFY, bare=True))
register(CheckKind("http", _url, lambda check: f"GET {check.url or '{' + check.endpoint + '}' + check.path}",
                   probe="watchdog.core.probes:http_check"))
register(CheckKind("tcp", _host_port, lambda check: f"tcp {check.host}:{check.port}",
                   probe="watchdog.core.probes:tcp_check"))
register(CheckKind(STARTED, _seconds, lambda check: STARTED, bare=0.0))
