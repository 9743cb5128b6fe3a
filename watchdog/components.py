"""The one place the product is composed: the supervisor's own commands, the bridge's slice, the drops' slice.

Plain imports of small modules (watchdog/shared/component.py says why not entry points). The supervision
core (watchdog/core) never imports this module or the packages it names; tests/test_import_graph.py holds it.

`Config` is the whole configuration: the supervisor's base (watchdog/shared/config_model.py) with each
slice's tables as fields (bridge/config.py's `accounts`, `sim`; monitors/config.py's `projects`, `webhooks`,
...). Why one class built from the slices' dataclasses rather than a config per package: the product reads
`config.accounts` and `config.projects` side by side in a hundred places, and a frozen dataclass keeps that,
with `replace` and equality for reload, while each package alone defines and checks its own fields. `load`
reads a file into it; the supervision core, which may not name it, reloads into `type(config)`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bridge.component import COMPONENT as BRIDGE
from monitors.component import COMPONENT as DROPS
from watchdog.commands.component import COMPONENT as SUPERVISOR
from watchdog.shared import config as base
from watchdog.shared.component import Component

COMPONENTS: tuple[Component, ...] = (SUPERVISOR, BRIDGE, DROPS)
SLICES = tuple(component.config for component in COMPONENTS if component.config is not None)


@dataclass(frozen=True)
class Config(*(part.tables for part in SLICES), base.Config):  # the base's fields, then each slice's (keyword-only)
    """The loaded configuration: what `load` returns and every command and process reads."""

    slices = SLICES

    def builtin_names(self) -> list[str]:
        from watchdog import builtins  # the built-in programs read the config: imported once one exists
        return builtins.builtin_names(self)


def load(path: str | Path, data_dir: str | Path | None = None) -> Config:
    """Read and validate a config file; raises ConfigError naming the bad key."""
    return base.load(Config, path, data_dir)


def load_text(text: str, path: Path, data_dir: Path | None = None) -> Config:
    """A config read from `text` as if it were the file `path` (watchdog/shared/config.py)."""
    return base.load_text(Config, text, path, data_dir)
