"""What a package adds to the supervisor: its config tables, commands, programs, install-check findings, backup items.

Why data and not subclasses: the supervisor (watchdog/core) runs programs and knows nothing of WhatsApp
or drops; `bridge/` and `monitors/` each describe their own slice in one `component.py`, and one small
module (watchdog/components.py) composes them with plain imports. Entry-point scanning would cost every
child process its start-up time; an import of a few named tuples costs nothing (a named tuple class is
~0.2 ms to make, a frozen dataclass ~1.4 ms, and every process makes these at start). Whatever a slice
names by "module:function" is imported only when it is used, so a bridge restart pays for none of the others.
"""
from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from watchdog.shared.config_model import ConfigSlice

OK, WARN, FAIL = "ok", "warn", "FAIL"


class Finding(NamedTuple):
    """One line of `wa-watchdog check`."""

    level: str  # OK | WARN | FAIL
    what: str  # config, data dir, port, session, unit, python, ffmpeg, groups, ...
    text: str

    def line(self) -> str:
        return f"{self.level:<5} {self.what:<9} {self.text}"


class BackupItem(NamedTuple):
    """One file `wa-watchdog backup` copies; SQLite files through the online backup API."""

    role: str  # messages:<account>, drops, session:<account>, recovery_log, config
    source: Path
    sqlite: bool


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    """A command that takes only --config and --data-dir."""


def json_option(parser: argparse.ArgumentParser) -> None:
    """`--json`, worded alike in every command that has it."""
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def since_option(parser: argparse.ArgumentParser) -> None:
    """`--since`, read with watchdog.shared.human.parse_since."""
    parser.add_argument("--since", help="only newer than this (e.g. 30m, 1h, 2d)")


class StatusSection(NamedTuple):
    """What a package adds to `wa-watchdog status`: lines under the components' table, and `data` under `name`
    in `--json` (e.g. the drops' cluster: its nodes and sender leases, read from the shared PostgreSQL); `data`
    None: lines only (what `--json` already carries in the components' items)."""

    name: str
    lines: list[str]
    data: object


class Command(NamedTuple):
    """One `wa-watchdog` subcommand: its handler `(config, args) -> exit code` is imported only when chosen."""

    name: str
    help: str
    handler: str  # "module:function"
    arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments
    writes_data_dir: bool = False  # checked (and created) before it starts
    sees_running: bool = False  # with the file on disk invalid, it reads the config the running watchdog loaded
    # Started by the watchdog, may it be forked from the pre-loaded template (watchdog/core/template.py)? None:
    # never (exec'd); "": always; "module:function": `(args) -> why it must be exec'd` ("" = forked).
    fork: str | None = None


class Component(NamedTuple):
    """One package's slice. Each "module:function" ("" = none) takes the loaded config and is imported when used:
    `programs` -> list[Program] started by `wa-watchdog run`; `findings` -> the named checks of `wa-watchdog
    check`, [(what, () -> Iterable[Finding])], each run alone (one that cannot look does not stop the others);
    `backup_items` -> (list[BackupItem], notes) for `wa-watchdog backup`; `status_sections` -> list[StatusSection]
    shown by `wa-watchdog status` after the running watchdog's table, given the config and the watchdog's status
    items (each answers for itself: a store it cannot reach is a line saying so, never an exception)."""

    name: str
    commands: tuple[Command, ...] = ()
    programs: str = ""
    findings: str = ""
    backup_items: str = ""
    status_sections: str = ""
    console_views: tuple[str, ...] = ()  # "module:Class" of product views the console composes (Class(config))
    preload: tuple[str, ...] = ()  # modules the fork template imports ahead (watchdog/core/template.py)
    # "module:function"s `(lines) -> lines` over `wa-watchdog recoveries`' lines (watchdog/commands/recoveries.py)
    recovery_folds: tuple[str, ...] = ()
    config: ConfigSlice | None = None  # its top-level tables, their checks, ports and secrets (config_model.py)


def resolve(reference: str) -> Any:
    """The object a "module:attribute" names, imported now."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)
