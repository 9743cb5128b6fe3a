"""The one place the product is composed: the supervisor's own commands, the bridge's slice, the drops' slice.

Plain imports of small modules (watchdog/shared/component.py says why not entry points). The supervision
core (watchdog/core) never imports this module or the packages it names; tests/test_import_graph.py holds it:
whoever starts them (watchdog/commands/run.py) hands them what they need from here.

`Config` is the whole configuration: the supervisor's base (watchdog/shared/config_model.py) with each
slice's tables as fields (bridge/config.py's `accounts`, `sim`; monitors/config.py's `projects`, `webhooks`,
...). Why one class built from the slices' dataclasses rather than a config per package: the product reads
`config.accounts` and `config.projects` side by side in a hundred places, and a frozen dataclass keeps that,
with `replace` and equality for reload, while each package alone defines and checks its own fields. `load`
reads a file into it; the supervision core, which may not name it, reloads into `type(config)`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from bridge.component import COMPONENT as BRIDGE
from monitors.component import COMPONENT as DROPS
from watchdog.commands.component import COMPONENT as SUPERVISOR
from watchdog.shared import config as base
from watchdog.shared.component import BackupItem, Command, Component, Finding, StatusSection, resolve
from watchdog.shared.programs import Program

COMPONENTS: tuple[Component, ...] = (SUPERVISOR, BRIDGE, DROPS)
SLICES = tuple(component.config for component in COMPONENTS if component.config is not None)


@dataclass(frozen=True)
class Config(*(part.tables for part in SLICES), base.Config):  # the base's fields, then each slice's (keyword-only)
    """The loaded configuration: what `load` returns and every command and process reads."""

    slices = SLICES

    def builtin_programs(self) -> list[Program]:
        return builtin_programs(self)


def load(path: str | Path, data_dir: str | Path | None = None) -> Config:
    """Read and validate a config file; raises ConfigError naming the bad key."""
    return base.load(Config, path, data_dir)


def load_text(text: str, path: Path, data_dir: Path | None = None) -> Config:
    """A config read from `text` as if it were the file `path` (watchdog/shared/config.py)."""
    return base.load_text(Config, text, path, data_dir)

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


def status_sections(config: Config, running: list[dict]) -> list[StatusSection]:
    """What the slices add to `wa-watchdog status` (the drops' sending and cluster), in the order of the slices;
    `running`: the watchdog's status items (each bridge's last health answer is in its `connection`)."""
    return [section for component in COMPONENTS if component.status_sections
            for section in resolve(component.status_sections)(config, running)]


def console_views() -> tuple[str, ...]:
    return tuple(view for component in COMPONENTS for view in component.console_views)


def recovery_folds() -> list[Callable[[list], list]]:
    """The slices' foldings of `wa-watchdog recoveries`' lines, in the order of the slices."""
    return [resolve(fold) for component in COMPONENTS for fold in component.recovery_folds]


def preload() -> tuple[str, ...]:
    return tuple(module for component in COMPONENTS for module in component.preload)

