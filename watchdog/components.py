"""The one place the product is composed: the supervisor's own commands, the bridge's slice, the drops' slice.

Plain imports of small modules (watchdog/shared/component.py says why not entry points). The supervision
core (watchdog/core), the control side and the shared base never import this module or the packages it
names: whoever starts them (watchdog/commands/run.py) hands them what they need from here.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

from bridge.component import COMPONENT as BRIDGE
from monitors.component import COMPONENT as DROPS
from watchdog.commands.component import COMPONENT as SUPERVISOR
from watchdog.shared import builtin_names
from watchdog.shared.component import BackupItem, Command, Component, Finding, resolve
from watchdog.shared.config import Config
from watchdog.shared.programs import Program

COMPONENTS: tuple[Component, ...] = (SUPERVISOR, BRIDGE, DROPS)
# A store that records how far it has read another is copied before it: the drops store's cursors (rowids of
# messages.db) then never point past the messages copied after it, so a restored pair re-reads, never skips.
BACKUP_ORDER: tuple[Component, ...] = (DROPS, BRIDGE)


def commands() -> dict[str, Command]:
    """Every `wa-watchdog` subcommand by name, in the order of the slices."""
    return {command.name: command for component in COMPONENTS for command in component.commands}


def builtin_programs(config: Config) -> list[Program]:
    """What the slices run: the simulator, one bridge per account, the monitor processes, drops-api."""
    return [program for component in COMPONENTS if component.programs
            for program in resolve(component.programs)(config)]


def all_programs(config: Config) -> list[Program]:
    """What `wa-watchdog run` supervises: the built-ins, then every `[[programs]]` entry."""
    return builtin_programs(config) + list(config.programs)


def checks(config: Config) -> list[tuple[str, Callable[[], Iterable[Finding]]]]:
    """The slices' own `wa-watchdog check` checks (media dirs, sessions, groups, ffmpeg ...), each named."""
    return [check for component in COMPONENTS if component.findings for check in resolve(component.findings)(config)]


def backup_items(config: Config) -> tuple[list[BackupItem], list[str]]:
    """The slices' stores to back up, in BACKUP_ORDER, and notes on what lives elsewhere."""
    items: list[BackupItem] = []
    notes: list[str] = []
    for component in BACKUP_ORDER:
        if component.backup_items:
            found, said = resolve(component.backup_items)(config)
            items += found
            notes += said
    return items, notes


def console_views() -> tuple[str, ...]:
    return tuple(view for component in COMPONENTS for view in component.console_views)


def preload() -> tuple[str, ...]:
    return tuple(module for component in COMPONENTS for module in component.preload)


builtin_names.use(builtin_programs)  # the config check that a [[programs]] entry takes no built-in's name
