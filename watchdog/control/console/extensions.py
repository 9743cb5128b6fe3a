"""The console's extension point: product views the watchdog core does not know about (circus-style plugins).

The watchdog knows processes, not drops. The drops view lives with the
monitors (`monitors/console_view.py`) and is found through the
`wa_watchdog.console` entry point group in pyproject.toml; each entry is a
class taking the Config. An extension that fails is shown as a one-line
problem in its place and never breaks the page.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Protocol

from loguru import logger

from watchdog.shared.config import Config
from watchdog.control.console.timeline import Mark

GROUP = "wa_watchdog.console"


class Extension(Protocol):
    name: str  # in URLs: /console/x/<name>/<key>
    title: str  # the panel's heading

    def panel(self) -> str:
        """The panel's HTML (escaped by the extension), rendered on every page view and live update."""

    def marks(self, since: float, until: float) -> list[Mark]:
        """Timeline marks in [since, until] (epoch seconds), on the rows of the components they belong to."""

    def names(self) -> dict[str, str]:
        """Group JID -> group name, so incidents read `Lawley Fibre`, not `1203...@g.us`."""

    def detail(self, key: str) -> tuple[str, str] | None:
        """(title, HTML) of the page /console/x/<name>/<key> links to; None if `key` names nothing."""


@dataclass(frozen=True)
class Loaded:
    extensions: list[Extension]
    problems: list[str]


def load(config: Config, factories: list[Callable[[Config], Extension]] | None = None) -> Loaded:
    """Instantiate every registered extension (or the given factories); a broken one becomes a problem line."""
    if factories is None:
        found = sorted(entry_points(group=GROUP), key=lambda ep: ep.name)
        factories = []
        problems = []
        for ep in found:
            try:
                factories.append(ep.load())
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the watchdog
                problems.append(f"console extension {ep.name} ({ep.value}) not loaded: {exc}")
    else:
        problems = []
    extensions = []
    for factory in factories:
        try:
            extensions.append(factory(config))
        except Exception as exc:  # noqa: BLE001
            problems.append(f"console extension {factory} not started: {exc}")
    for problem in problems:
        logger.error("{}", problem)
    return Loaded(extensions, problems)
