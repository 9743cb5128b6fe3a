"""Programs as data: what to run and how to judge it, for every supervised process alike.

A `[[programs]]` table declares any program (the web app, a second sender, ...);
the simulator, bridges and monitors are built-in programs of this same schema,
generated from `[accounts]` and `[[projects]]` (bridge/programs.py, monitors/programs.py). The
supervision core reads only `Program`: it never asks what kind of thing it runs.

Kept free of imports beyond the standard library: every child loads the config
(and so this module) on each cold start.
"""
from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from watchdog.shared import check_kinds
from watchdog.shared.exitcodes import EXIT_CONFIG, EXIT_NEEDS_OPERATOR

RESTART_MODES = ("always", "on-failure", "never")
OWN_NO_RESTART_EXITS = (EXIT_CONFIG, EXIT_NEEDS_OPERATOR)  # our own components: restarting will not help
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:@")


@dataclass(frozen=True)
class Check:
    """One readiness or liveness check of a registered kind (watchdog/shared/check_kinds.py). `http`: GET `url`
    (or the program's own published `endpoint` + `path`) answers `status`; `tcp`: `host:port` accepts;
    `started`: running for `seconds`; `notify`: READY=1."""

    kind: str
    url: str = ""
    endpoint: str = ""  # a name the program publishes in run/<name>.json (our own components), e.g. "api"
    path: str = ""
    status: int = 200
    token: str = ""  # bearer token for http
    socket: str = ""  # http over this unix socket first (our own components: endpoints.health_socket)
    host: str = "127.0.0.1"
    port: int = 0
    seconds: float = 0.0
    period: float = 1.0
    timeout: float = 1.0
    failure_threshold: int = 3
    initial_delay: float = 0.0

    @property
    def target(self) -> tuple:
        """What the check looks at: a readiness and a liveness check with one target are probed as one."""
        return self.kind, self.url, self.endpoint, self.path, self.host, self.port

    def describe(self) -> str:
        kind = check_kinds.get(self.kind)
        return kind.describe(self) if kind else self.kind


@dataclass(frozen=True)
class Program:
    """A supervised program. Fields below `no_restart_exit_codes` are what built-ins supply (any program may)."""

    name: str
    argv: tuple[str, ...]
    cwd: str = ""  # "" = the watchdog's working directory
    env: tuple[tuple[str, str], ...] = ()
    after: tuple[str, ...] = ()  # start once these are healthy; stopped before them
    ready: Check = Check("started", seconds=1.0)
    liveness: tuple[Check, ...] = ()
    watchdog_sec: float = 0.0  # sd_notify WATCHDOG=1 expected at least this often; 0 = no heartbeat check
    stop_signal: str = "SIGTERM"
    stop_timeout: float = 0.0  # planned stops: signal, then SIGKILL after this; 0 = watchdog.stop_timeout
    rss_limit_mb: int = 0
    restart: str = "always"
    no_restart_exit_codes: tuple[int, ...] = ()
    hooks: str = ""  # "module:attribute" of a watchdog.core.hooks.Hooks: product-specific checks and standby
    standby: bool = False  # keep a warm standby (its argv comes from the hooks)
    pidfile: Path | None = None  # names the pid of the instance holding it: an earlier run's is stopped first
    signature: tuple[tuple[str, ...], ...] = ()  # command-line words of a leftover instance; () = argv itself
    group: str = ""  # programs of one group are counted together in STATUS= ("monitors 6/6 ready")
    fingerprint: str = ""  # built-ins: what of the config they read; a change restarts them on reload

    @property
    def signal_number(self) -> int:
        return int(signal.Signals[self.stop_signal])

    @property
    def leftover_signature(self) -> tuple[tuple[str, ...], ...]:
        return self.signature or (self.argv,)


ErrorFactory = Callable[[str, str], Exception]


def parse(raw: object, error: ErrorFactory, base_dir: Path) -> list[Program]:
    """`[[programs]]` -> Programs, validated; `error(key, problem)` builds the ConfigError."""
    if not isinstance(raw, list):
        raise error("programs", "expected an array of tables ([[programs]])")
    programs = []
    for i, body in enumerate(raw):
        if not isinstance(body, dict):
            raise error(f"programs[{i}]", "expected a table")
        name = body.get("name")
        if not isinstance(name, str) or not name or not set(name) <= NAME_CHARS:
            raise error(f"programs[{i}].name", f"expected a name of letters, digits and -_.:@, got {name!r}")
        programs.append(_Parser(f"programs.{name}", error, base_dir).program(body))
    return programs


def check_names(programs: list[Program], builtin: list[str], error: ErrorFactory) -> None:
    """Names unique and not a built-in's; every `after` names a program; no dependency cycle."""
    known = set(builtin)
    for program in programs:
        if program.name in known:
            what = "a built-in program" if program.name in builtin else "declared twice"
            raise error(f"programs.{program.name}.name", f"{program.name!r} is {what}")
        known.add(program.name)
    after = {p.name: p.after for p in programs}
    for program in programs:
        for j, other in enumerate(program.after):
            if other not in known:
                raise error(f"programs.{program.name}.after[{j}]",
                            f"no program named {other!r} (known: {', '.join(sorted(known))})")
        seen, todo = set(), list(program.after)
        while todo:
            other = todo.pop()
            if other == program.name:
                raise error(f"programs.{program.name}.after", "dependency cycle: it would wait for itself")
            if other not in seen:
                seen.add(other)
                todo.extend(after.get(other, ()))


class _Parser:
    KEYS = {"name", "argv", "cwd", "env", "after", "ready", "liveness", "watchdog_sec", "stop_signal",
            "stop_timeout", "rss_limit_mb", "restart", "no_restart_exit_codes"}
    CHECK_OPTIONS = {"status", "period", "timeout", "failure_threshold", "initial_delay"}

    def __init__(self, key: str, error: ErrorFactory, base_dir: Path) -> None:
        self.key = key
        self.error = error
        self.base_dir = base_dir

    def program(self, body: dict) -> Program:
        for name in body:
            if name not in self.KEYS:
                raise self.error(f"{self.key}.{name}", "unknown key")
        argv = body.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) and a for a in argv):
            raise self.error(f"{self.key}.argv", "expected a non-empty array of strings (the command and its arguments)")
        cwd = self.string(body, "cwd", "")
        env = body.get("env", {})
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise self.error(f"{self.key}.env", "expected a table of strings (NAME = \"value\")")
        after = body.get("after", [])
        if not isinstance(after, list) or not all(isinstance(a, str) for a in after):
            raise self.error(f"{self.key}.after", "expected an array of program names (e.g. [\"bridge:main\"])")
        stop_signal = self.string(body, "stop_signal", "SIGTERM").upper()
        stop_signal = stop_signal if stop_signal.startswith("SIG") else "SIG" + stop_signal
        if stop_signal not in signal.Signals.__members__:
            raise self.error(f"{self.key}.stop_signal", f"not a signal name: {body['stop_signal']!r}")
        restart = self.string(body, "restart", "always")
        if restart not in RESTART_MODES:
            raise self.error(f"{self.key}.restart", f"must be always, on-failure or never, got {restart!r}")
        codes = body.get("no_restart_exit_codes", [])
        if not isinstance(codes, list) or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255
                                                  for c in codes):
            raise self.error(f"{self.key}.no_restart_exit_codes", "expected an array of exit codes 0-255")
        liveness = body.get("liveness", [])
        if not isinstance(liveness, list):
            raise self.error(f"{self.key}.liveness", "expected an array of tables ([[programs.liveness]])")
        ready = body.get("ready", {"started": 1.0})
        return Program(
            name=body["name"], argv=tuple(argv),
            cwd=str((self.base_dir / cwd).resolve()) if cwd else "",
            env=tuple(sorted(env.items())), after=tuple(after),
            ready=self.check(ready, f"{self.key}.ready", check_kinds.names()),
            liveness=tuple(self.check(c, f"{self.key}.liveness[{j}]", check_kinds.names(probed_only=True))
                           for j, c in enumerate(liveness)),
            watchdog_sec=self.number(body, "watchdog_sec", 0.0), stop_signal=stop_signal,
            stop_timeout=self.number(body, "stop_timeout", 0.0),
            rss_limit_mb=int(self.number(body, "rss_limit_mb", 0, integer=True)), restart=restart,
            no_restart_exit_codes=tuple(codes))

    def string(self, body: dict, name: str, default: str) -> str:
        value = body.get(name, default)
        if not isinstance(value, str):
            raise self.error(f"{self.key}.{name}", f"expected a string, got {type(value).__name__}")
        return value

    def number(self, body: dict, name: str, default: float, integer: bool = False, key: str = "") -> float:
        value = body.get(name, default)
        key = key or f"{self.key}.{name}"
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            raise self.error(key, f"expected {'an integer' if integer else 'a number'}, got {value!r}")
        if value < 0:
            raise self.error(key, f"must be 0 or more, got {value}")
        return value

    def check(self, raw: object, key: str, kinds: tuple[str, ...]) -> Check:
        """A kind named alone ("notify", "started") or {kind = value, options}; kinds: check_kinds' registry."""
        if isinstance(raw, str):
            kind = check_kinds.get(raw)
            raw = {raw: kind.bare if kind and kind.bare is not None else 0.0}
        if not isinstance(raw, dict):
            raise self.error(key, f"expected one of {', '.join(kinds)} (a string or a table)")
        named = [k for k in raw if check_kinds.get(k)]
        if len(named) != 1 or named[0] not in kinds:
            raise self.error(key, f"expected exactly one of {', '.join(kinds)}, got {', '.join(named) or 'none'}")
        for name in raw:
            if not check_kinds.get(name) and name not in self.CHECK_OPTIONS:
                raise self.error(f"{key}.{name}", "unknown key")
        kind = named[0]
        options = {name: self.number(raw, name, getattr(Check, name), integer=name in ("status", "failure_threshold"),
                                     key=f"{key}.{name}") for name in self.CHECK_OPTIONS if name in raw}
        for name in ("period", "timeout", "failure_threshold"):
            if name in options and options[name] <= 0:
                raise self.error(f"{key}.{name}", f"must be more than 0, got {options[name]}")
        try:
            fields = check_kinds.get(kind).parse(raw[kind])  # type: ignore[union-attr]
        except ValueError as exc:
            raise self.error(f"{key}.{kind}", str(exc)) from None
        return Check(kind, **options, **fields)


@dataclass(frozen=True)
class Changes:
    """What a reload does: programs to start, stop, and restart (stop the old, start the new)."""

    added: list[Program] = field(default_factory=list)
    removed: list[Program] = field(default_factory=list)
    changed: list[Program] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def summary(self) -> str:
        parts = [f"{what} {', '.join(p.name for p in programs)}" for what, programs in
                 (("added", self.added), ("removed", self.removed), ("changed", self.changed)) if programs]
        return "; ".join(parts) or "no program changed"


def diff(old: list[Program], new: list[Program]) -> Changes:
    """Compare two program lists by name; a program is changed when any field (its fingerprint included) is."""
    before = {p.name: p for p in old}
    after = {p.name: p for p in new}
    return Changes(added=[p for name, p in after.items() if name not in before],
                   removed=[p for name, p in before.items() if name not in after],
                   changed=[p for name, p in after.items() if name in before and before[name] != p])
