"""What the console shows, composed from the arbiter's status, the recovery log, the log files and extensions.

Everything here is plain data and cheap to ask for again: the recovery log is
cached (`records.py`), incidents are recomputed only when it grew, log tails
only when a file changed. The HTML is made in `render.py`.
"""
from __future__ import annotations

import asyncio
import math
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from loguru import logger

from watchdog.core.child_output import log_path
from watchdog.shared.config import Config
from watchdog.control.console import timeline
from watchdog.control.console.extensions import Extension, Loaded, load
from watchdog.control.console.timeline import Mark
from watchdog.control.console.incidents import Incident, incidents
from watchdog.control.console.records import RecordCache
from watchdog.commands.logs import tail
from watchdog.shared.recovery_log import RecoveryLog
from watchdog.shared import clock

LOG_LINES = 12  # per component in the Logs panel
EXTENSION_TIMEOUT_S = 2.0  # an extension reading a store that does not answer must not hold the page
EXTRAS_TTL_S = 2.0  # the drops panel may be this old; a page view does not wait for the store


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
                 restart: Callable[[str], Awaitable[dict]], extensions: Loaded | None = None,
                 views: tuple[str, ...] = ()) -> None:
        """`views`: the product's views ("module:Class", watchdog/control/console/extensions.py), loaded here
        unless `extensions` are given already loaded."""
        self.config = config
        self.views = views
        self.status = status
        self.restart = restart
        settings = config.watchdog
        self.records = RecordCache(RecoveryLog(settings.recovery_log, settings.recovery_log_max_bytes))
        self.loaded = extensions if extensions is not None else load(config, views)
        # records version -> (timeline spans and marks, incidents), and the last drawing with what it showed
        self._derived: tuple[int, tuple[list[timeline.Span], list[Mark]], list[Incident]] = (-1, ([], []), [])
        self._history: tuple[tuple, tuple[str, str]] = ((), ("", ""))
        self._drawing = asyncio.Lock()
        self._extras: dict[str, tuple[float, Extras]] = {}  # range -> (monotonic time asked, answer)
        self._refreshing: dict[str, asyncio.Task] = {}
        self._tails: dict[str, tuple[tuple[int, int], list[str]]] = {}

    def reconfigure(self, config: Config) -> None:
        """After a reload: the new config's projects and extensions (the logs and records stay where they are)."""
        self.config = config
        self.loaded = load(config, self.views)
        self._extras.clear()

    @property
    def extensions(self) -> list[Extension]:
        return self.loaded.extensions

    def rows(self) -> list[Row]:
        hour_ago = clock.now_s() - 3600
        restarts = Counter(r.get("component") for r in self.records.since(hour_ago) if r.get("event") == "restart")
        return [Row(item, restarts[item.get("name")]) for item in self.status()]

    async def extras(self, range_name: str) -> Extras:
        """The extensions' latest answer for this range: at most EXTRAS_TTL_S old, refreshed in the background.

        So a page view never waits for a store (after the first one of each range).
        """
        cached = self._extras.get(range_name)
        fresh = cached is not None and time.monotonic() - cached[0] < EXTRAS_TTL_S
        task = self._refreshing.get(range_name)
        if not fresh and (task is None or task.done()):
            task = asyncio.get_running_loop().create_task(self._ask_extensions(range_name))
            self._refreshing[range_name] = task
        if cached is not None:
            return cached[1]
        assert task is not None
        return await asyncio.shield(task)

    async def _ask_extensions(self, range_name: str) -> Extras:
        until = clock.now_s()
        since = until - timeline.RANGES[range_name]
        extras = Extras()
        status = self.status()  # here, in the loop: the arbiter's items are not for worker threads to read
        for extension in self.extensions:
            def ask(e: Extension = extension) -> tuple[str, list[Mark], dict[str, str]]:
                return e.panel(status), e.marks(since, until), e.names()
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
        self._extras[range_name] = (time.monotonic(), extras)
        return extras

    async def history(self, range_name: str, extras: Extras,
                      render_incidents: Callable[[list[Incident], dict[str, str]], str]) -> tuple[str, str]:
        """(timeline SVG, Incidents panel): drawn again only when something they show changed.

        That is a new recovery record, other rows, marks or names, or `now` moving by a pixel. Drawing
        10,000 records takes long enough to matter to supervision, so it happens in a worker thread
        (the event loop keeps running between its time slices) on a copy of the records.
        """
        self.records.records()  # take in what was appended
        rows = [row.name for row in self.rows()]
        until = clock.now_s()
        pixel_s = timeline.RANGES[range_name] / (timeline.WIDTH - timeline.LABEL - timeline.PAD)
        key = (self.records.version, range_name, tuple(rows), tuple(extras.marks), tuple(sorted(extras.names.items())),
               int(until // pixel_s))
        async with self._drawing:
            if self._history[0] != key:
                records = list(self.records.records())
                drawn = await asyncio.to_thread(self._draw, records, self.records.version, range_name, rows, extras,
                                                until, render_incidents)
                self._history = (key, drawn)
        return self._history[1]

    def _draw(self, records: list[dict], version: int, range_name: str, rows: list[str], extras: Extras, until: float,
              render_incidents: Callable[[list[Incident], dict[str, str]], str]) -> tuple[str, str]:
        if self._derived[0] != version:  # what is still going on ends at +inf, drawn up to now
            events = self.loaded.events
            self._derived = (version, timeline.spans_and_marks(records, math.inf, events), incidents(records, events))
        _, (spans, marks), found = self._derived
        since = until - timeline.RANGES[range_name]
        return (timeline.svg(rows, spans, marks + extras.marks, since, until, self.records.first_time,
                             self.loaded.events),
                render_incidents(found, extras.names))

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
