"""What a package adds to the supervisor: its config tables, commands, programs, install-check findings, backup items.

Why data and not subclasses: the supervisor (watchdog/core) runs programs and knows nothing of WhatsApp
or drops; `bridge/` and `monitors/` each describe their own slice in one `component.py`, and one small
module (watchdog/components.py) composes them with plain imports. Entry-point scanning would cost every
child process its start-up time; an import of a few dataclasses costs nothing. Whatever a slice names
by "module:function" is imported only when it is used, so a bridge restart pays for none of the others.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchdog.shared.config_model import ConfigSlice

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass(frozen=True)
class Finding:
    """One line of `wa-watchdog check`."""

    level: str  # OK | WARN | FAIL
    what: str  # config, data dir, port, session, unit, python, ffmpeg, groups, ...
    text: str

    def line(self) -> str:
        return f"{self.level:<5} {self.what:<9} {self.text}"


@dataclass(frozen=True)
class BackupItem:
    """One file `wa-watchdog backup` copies; SQLite files through the online backup API."""

    role: str  # messages:<account>, drops, session:<account>, recovery_log, config
    source: Path
    sqlite: bool


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    """A command that takes only --config and --data-dir."""


@dataclass(frozen=True)
class Command:
    """One `wa-watchdog` subcommand: its handler `(config, args) -> exit code` is imported only when chosen."""

    name: str
    help: str
    handler: str  # "module:function"
    arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments
    writes_data_dir: bool = False  # checked (and created) before it starts
    sees_running: bool = False  # with the file on disk invalid, it reads the config the running watchdog loaded


def _nothing(config: Any) -> list:
    return []


@dataclass(frozen=True)
class Component:
    """One package's slice; every callable takes the loaded config."""

    name: str
    commands: tuple[Command, ...] = ()
    programs: Callable[[Any], list] = _nothing  # -> list[Program], started by `wa-watchdog run`
    findings: Callable[[Any], Iterable[Finding]] = _nothing  # `wa-watchdog check`
    backup_items: Callable[[Any], tuple[list[BackupItem], list[str]]] = lambda config: ([], [])  # items, notes
    console_views: tuple[str, ...] = ()  # "module:Class" of product views the console composes
    preload: tuple[str, ...] = ()  # modules the fork template imports ahead (watchdog/core/template.py)
    config: ConfigSlice | None = None  # its top-level tables, their checks, ports and secrets (config_model.py)
