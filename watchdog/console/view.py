"""What the console shows, composed from the arbiter's status, the recovery log, the log files and extensions.

Everything here is plain data and cheap to ask for again: the recovery log is
cached (`records.py`), incidents are recomputed only when it grew, log tails
only when a file changed. The HTML is made in `render.py`.
"""
from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from loguru import logger

from watchdog.child_output import log_path
from watchdog.config import Config
from watchdog.console import timeline
from watchdog.console.extensions import Extension, Loaded, load
from watchdog.console.timeline import Mark
from watchdog.console.incidents import Incident, incidents
from watchdog.console.records import RecordCache
from watchdog.log_view import tail
from watchdog.recovery_log import RecoveryLog

LOG_LINES = 12  # per component in the Logs panel
EXTENSION_TIMEOUT_S = 2.0  # an extension reading a store that does not answer must not hold the page


@dataclass
class Extras:
    """What the extensions said for one view, asked in a worker thread (they read stores that may block)."""

    panels: dict[str, str] = field(default_factory=dict)  # extension name -> panel HTML
    marks: list[Mark] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    """One component in the Now panel: the arbiter's status item plus what the recovery log adds."""

    status: dict
    restarts_last_hour: int

    @property
    def name(self) -> str:
        return str(self.status.get("name", "?"))


class Console:
    def __init__(self, config: Config, status: Callable[[], list[dict]],
                 restart: Callable[[str], Awaitable[dict]], extensions: Loaded | None = None) -> None:
        self.config = config
        self.status = status
        self.restart = restart
        settings = config.watchdog
        self.records = RecordCache(RecoveryLog(settings.recovery_log, settings.recovery_log_max_bytes))
        self.loaded = extensions if extensions is not None else load(config)
        self._incidents: tuple[int, list[Incident]] = (-1, [])
        self._tails: dict[str, tuple[tuple[int, int], list[str]]] = {}

    @property
    def extensions(self) -> list[Extension]:
        return self.loaded.extensions

    def rows(self) -> list[Row]:
        hour_ago = time.time() - 3600
        restarts = Counter(r.get("component") for r in self.records.since(hour_ago) if r.get("event") == "restart")
        return [Row(item, restarts[item.get("name")]) for item in self.status()]

    def incidents(self) -> list[Incident]:
        """Oldest first; recomputed only when the recovery log changed."""
        records = self.records.records()
        if self._incidents[0] != self.records.version:
            self._incidents = (self.records.version, incidents(records))
        return self._incidents[1]

    async def extras(self, range_name: str) -> Extras:
        """Every extension's panel, timeline marks and group names; a slow or failing one is a line saying so."""
        until = time.time()
        since = until - timeline.RANGES[range_name]
        extras = Extras()
        for extension in self.extensions:
            def ask(e: Extension = extension) -> tuple[str, list[Mark], dict[str, str]]:
                return e.panel(), e.marks(since, until), e.names()
            try:
                panel, marks, names = await asyncio.wait_for(asyncio.to_thread(ask), EXTENSION_TIMEOUT_S)
            except asyncio.TimeoutError:
                panel, marks, names = (f'<p class="bad">{escape(extension.title)}: no answer within '
                                       f'{EXTENSION_TIMEOUT_S:g} s (is its store reachable?)</p>', [], {})
            except Exception as exc:  # noqa: BLE001 - a broken view must not break the page
                logger.opt(exception=exc).error("console extension {} failed", extension.name)
                panel, marks, names = (f'<p class="bad">{escape(extension.title)} failed: '
                                       f'{escape(str(exc) or type(exc).__name__)}</p>', [], {})
            extras.panels[extension.name] = panel
            extras.marks += marks
            extras.names.update(names)
        return extras

    def timeline(self, range_name: str, marks: list[Mark], now: float | None = None) -> str:
        until = time.time() if now is None else now
        since = until - timeline.RANGES[range_name]
        spans, own_marks = timeline.spans_and_marks(self.records.records(), until)
        return timeline.svg([row.name for row in self.rows()], spans, own_marks + marks, since, until)

    def log_names(self) -> list[str]:
        return ["watchdog", *(row.name for row in self.rows())]

    def log_tails(self) -> dict[str, list[str]]:
        """Each component's last lines (and the watchdog's), read again only when its file changed."""
        tails = {}
        for name in self.log_names():
            path = log_path(self.config.data_dir, name)
            key = _file_key(path)
            cached = self._tails.get(name)
            if cached is None or cached[0] != key:
                cached = (key, tail(path, LOG_LINES))
                self._tails[name] = cached
            tails[name] = cached[1]
        return tails


def _file_key(path: Path) -> tuple[int, int]:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return (0, -1)
    return (stat.st_ino, stat.st_size)
