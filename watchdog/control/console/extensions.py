"""The console's extension point: product views the watchdog core does not know about (circus-style plugins).

The watchdog knows processes, not drops or WhatsApp. The drops view lives with
the monitors (`monitors/console_view.py`), the connection view with the bridge
(`bridge/console_view.py`); each is named by its slice's `console_views`
("module:Class", a class taking the Config); the composition
(watchdog/components.py) hands the names to whoever starts the console. Besides
its panel, a view may declare the recovery-log events it knows (`events`,
events.py) and add a line under a component in the Now panel (`row`). An
extension that fails is shown as a one-line problem in its place and never
breaks the page.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from loguru import logger

from watchdog.shared.component import resolve
from watchdog.shared.config import Config
from watchdog.control.console.events import Events, merged
from watchdog.control.console.timeline import Mark


class Extension(Protocol):
    """What a view offers; a view that subclasses it explicitly inherits the defaults of what it does not offer
    (no panel, marks, names, detail pages or rows)."""

    name: str  # in URLs: /console/x/<name>/<key>
    title: str  # the panel's heading; "" = no panel (a view that only declares events and rows)
    events: Events  # the recovery-log events it knows (events.NONE: none)

    def panel(self, status: list[dict]) -> str:
        """The panel's HTML (escaped by the extension), rendered on every page view and live update; `status`:
        every component's status item (as `row` gets them one by one)."""
        return ""

    def marks(self, since: float, until: float) -> list[Mark]:
        """Timeline marks in [since, until] (epoch seconds), on the rows of the components they belong to."""
        return []

    def names(self) -> dict[str, str]:
        """Group JID -> group name, so incidents read `Lawley Fibre`, not `1203...@g.us`."""
        return {}

    def detail(self, key: str) -> tuple[str, str] | None:
        """(title, HTML) of the page /console/x/<name>/<key> links to; None if `key` names nothing."""
        return None

    def row(self, status: dict) -> str:
        """A line of HTML under this component's row in the Now panel, from its status item; "" = none."""
        return ""


@dataclass(frozen=True)
class Loaded:
    extensions: list[Extension]
    problems: list[str]

    @property
    def events(self) -> Events:
        return merged(extension.events for extension in self.extensions)


def load(config: Config, views: Sequence[str]) -> Loaded:
    """Instantiate every view ("module:Class"); one that does not import or start becomes a problem line."""
    extensions = []
    problems = []
    for view in views:
        try:
            extensions.append(resolve(view)(config))
        except Exception as exc:  # noqa: BLE001 - a broken view must not stop the watchdog
            problems.append(f"console extension {view} not started: {exc}")
    for problem in problems:
        logger.error("{}", problem)
    return Loaded(extensions, problems)
