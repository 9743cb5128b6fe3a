"""The configuration's generic shape: the supervisor's own tables, and what a package declares of its own.

Why plain dataclasses: every child process loads the config on a cold start, and
they cost nothing to import (watchdog/shared/config.py explains the validation).

Why slices: the supervisor knows programs, alerts and its control API, never
WhatsApp or drops. `bridge/config.py` and `monitors/config.py` each hold their
tables and checks and declare them as a `ConfigSlice`; watchdog/components.py
composes one `Config` class from this base and every slice's tables, and the
loader (watchdog/shared/config.py) reads a file into it. A package's settings are
then added in its own package only.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from watchdog.shared import alert_rules
from watchdog.shared.exitcodes import EXIT_CONFIG
from watchdog.shared.programs import Program

if TYPE_CHECKING:
    from watchdog.shared.config_checks import ConfigChecks

# Account and project names become component names, file names and CLI arguments.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MIN_HEARTBEAT = 0.5  # watchdog_sec: below this a loaded machine misses heartbeats and restarts for nothing
MIN_RSS_LIMIT_MB = 16  # a Python process needs more than this just to start
MIN_LOG_BYTES = 4096  # a rotation threshold smaller than a few records rotates on every line
ORIGIN = re.compile(r"^https?://[^/\s?#]+$")


class ConfigError(Exception):
    """A configuration problem; the message names the file and the key."""

    exit_code = EXIT_CONFIG


def is_postgres_url(url: str) -> bool:
    """True for a PostgreSQL connection URL (libpq takes both schemes); otherwise a SQLite file is meant."""
    return url.startswith(("postgresql://", "postgres://"))


@dataclass(frozen=True)
class AlertConfig:
    url: str
    format: str = "json"  # slack | discord | json
    repeat_interval: float = 3600.0
    disconnect_threshold: float = 120.0
    rules: list[str] = field(default_factory=lambda: list(alert_rules.known()))  # every registered rule


@dataclass(frozen=True)
class WatchdogConfig:
    control_host: str = "127.0.0.1"
    control_port: int = 0
    control_token: str = ""
    recovery_log: Path = Path("recoveries.jsonl")
    recovery_log_max_bytes: int = 10 * 1024 * 1024
    child_log_max_bytes: int = 10 * 1024 * 1024
    term_grace: float = 2.0  # SIGTERM -> SIGKILL for a hung child
    stop_timeout: float = 10.0  # per component on shutdown
    backoff_initial: float = 0.1
    backoff_max: float = 30.0
    backoff_reset_after: float = 60.0  # healthy this long -> backoff starts over
    crash_loop_exits: int = 5
    crash_loop_window: float = 60.0
    start_timeout: float = 60.0  # a child not ready by then is a hang (its start-up grace ends)
    overload_grace: float = 30.0  # a starved (runnable, gaining CPU) child gets this long before it counts as hung
    max_starting: int = 0  # children starting at once; 0 = twice the CPU count
    restart_rate: float = 10.0  # restarts per second, all programs together
    process_check_period: float = 1.0  # /proc state (SIGSTOP = hang) of every child
    fork_template: bool = True  # fork our own components from a pre-loaded template (watchdog/core/forkserver.py)
    control_allowed_hosts: list[str] = field(default_factory=list)  # Host names beyond loopback (a reverse proxy)
    control_allowed_origins: list[str] = field(default_factory=list)


def _unchanged(checks: ConfigChecks, config: Any) -> Any:
    return config


def _none(config: Any) -> list:
    return []


@dataclass(frozen=True)
class ConfigSlice:
    """What a package declares of the configuration (its `Component.config`); every callable is plain code.

    `tables` is a frozen `kw_only` dataclass: its fields are the package's top-level keys, and the composed
    `Config` holds them under the same names (`config.accounts`). `read` turns the parsed file into those
    fields, each table checked on its own; `check` runs once every slice is read, on the composed config,
    for what spans tables (a project's account) and returns it completed.
    """

    tables: type
    read: Callable[[ConfigChecks, dict, Path], dict[str, Any]]  # (checks, parsed file, data_dir) -> field values
    check: Callable[[ConfigChecks, Any], Any] = _unchanged
    ports: Callable[[Any], list[tuple[str, str, int]]] = _none  # (key, host, port) of each listener; 0 = any free
    secret_keys: Callable[[Any], list[str]] = _none  # keys holding a secret (config_secrets.py)
    urls: Callable[[Any], list[tuple[str, str]]] = _none  # (key, URL) that an example's placeholder must not be
    counts: Callable[[Any], list[str]] = _none  # what `wa-watchdog check` says it holds: ["2 project(s)"]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self.tables))


@dataclass(frozen=True)
class Config:
    """The supervisor's part of every config; watchdog/components.py adds each package's tables to it.

    `slices` (set by the composed class) is how the generic loader, the port check and the secret check reach
    every package's part without importing one.
    """

    path: Path
    data_dir: Path
    watchdog: WatchdogConfig
    alerts: list[AlertConfig] = field(default_factory=list)
    programs: list[Program] = field(default_factory=list)  # [[programs]]; built-ins: the slices' programs

    slices: ClassVar[tuple[ConfigSlice, ...]] = ()

    def builtin_programs(self) -> list[Program]:
        """The programs the packages generate from this config (the composed class asks the slices)."""
        return []

    def builtin_names(self) -> list[str]:
        """The names of the programs the packages generate from this config: no [[programs]] entry may take one."""
        return [program.name for program in self.builtin_programs()]
