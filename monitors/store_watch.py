"""Wake followers when the bridge writes a store: one inotify instance per process, a watch per store directory.

The bridge commits by write()s to `messages.db-wal` (and, at a checkpoint, to
`messages.db`); each write is an IN_MODIFY on the store's directory, named by
the file. Watching the directory, not the files, also sees the WAL being
created again and a store replaced by rename. The -shm index is written
through mmap, which inotify does not see and we do not need.

A monitor follows two stores (the listening account's messages, the sending
account's receipts), and Linux allows 128 inotify instances per user by
default: one instance per follower would run out at ~60 projects on a host.
So every follower of a process subscribes to the one `StoreWakes`, and an
instance holds any number of watches.

`WakeSchedule` is the one place that decides when a follower looks: at once
on a wake, again SETTLE_DELAYS after it while its commit is not visible yet,
and a full look every SAFETY_INTERVAL (every POLL_INTERVAL without inotify).

Why `inotify_simple`: it is the ~100 lines of ctypes around inotify_init1 /
inotify_add_watch / read that we would otherwise write, and nothing more
(no threads, no event loop of its own), so the event loop reads its fd.
"""
from __future__ import annotations

import asyncio
import math
import time
from contextlib import suppress
from pathlib import Path

from inotify_simple import INotify, flags
from loguru import logger

from monitors.follow import POLL_INTERVAL, SAFETY_INTERVAL, SETTLE_DELAYS
from watchdog.shared.waiting import wait_event

WATCHED = flags.MODIFY | flags.CREATE | flags.MOVED_TO | flags.DELETE


class WakeSchedule:
    """When one follower looks at its store next; its `wake` is set by inotify (or by whoever stops it)."""

    def __init__(self, wakes: StoreWakes | None, path: Path, wake: asyncio.Event, watch: int | None) -> None:
        self.path = path
        self.wake = wake
        self.names = frozenset({path.name, f"{path.name}-wal"})
        self.watch = watch  # the inotify watch descriptor of the store's directory; None: polled
        self.interval = SAFETY_INTERVAL if watch is not None else POLL_INTERVAL
        self._wakes = wakes
        self._settle: list[float] = []  # after a wake whose commit was not visible yet: when to look again
        self._next_full = time.monotonic() + self.interval  # the caller's first look is a full one

    def committed(self) -> None:
        """The commit a wake announced is visible: no more settle looks for it."""
        self._settle = []

    async def next_look(self, limit: float = math.inf) -> bool:
        """Wait for the next look (at most `limit` s); True when it is the full look due every `interval`."""
        timeout = min(limit, self._settle.pop(0) if self._settle else max(0.0, self._next_full - time.monotonic()))
        if await wait_event(self.wake, timeout):
            self._settle = list(SETTLE_DELAYS)
        self.wake.clear()  # before the look: a write while the caller looks wakes the next wait
        now = time.monotonic()
        if now < self._next_full:
            return False
        self._next_full = now + self.interval
        return True

    def close(self) -> None:
        if self._wakes is not None:
            self._wakes.unsubscribe(self)
            self._wakes = None


class StoreWakes:
    """The process's one inotify instance, opened with the first subscription and closed after the last."""

    def __init__(self) -> None:
        self._inotify: INotify | None = None
        self._unavailable = False  # inotify_init failed (e.g. fs.inotify.max_user_instances): logged, poll
        self._subscribers: dict[int, list[WakeSchedule]] = {}  # by watch descriptor (one per directory)

    def subscribe(self, path: Path, wake: asyncio.Event) -> WakeSchedule:
        """Set `wake` whenever the store at `path` or its WAL is written; polled when inotify cannot watch it.

        Call from the running event loop (it reads the instance's fd); the store's directory must exist.
        """
        inotify = self._instance()
        watch = None
        if inotify is not None:
            try:
                watch = inotify.add_watch(path.parent, WATCHED)  # the same wd for a directory watched already
            except OSError as exc:  # e.g. fs.inotify.max_user_watches
                logger.warning("no inotify watch for {} ({}): polling it every {:g} s", path, exc, POLL_INTERVAL)
        schedule = WakeSchedule(self, path, wake, watch)
        if watch is not None:
            self._subscribers.setdefault(watch, []).append(schedule)
        return schedule

    def unsubscribe(self, schedule: WakeSchedule) -> None:
        if schedule.watch is None or self._inotify is None:
            return
        left = [s for s in self._subscribers.get(schedule.watch, []) if s is not schedule]
        if left:
            self._subscribers[schedule.watch] = left
            return
        self._subscribers.pop(schedule.watch, None)
        with suppress(OSError):  # gone already: its directory was removed
            self._inotify.rm_watch(schedule.watch)
        if not self._subscribers:
            asyncio.get_running_loop().remove_reader(self._inotify.fileno())
            self._inotify.close()
            self._inotify = None

    def _instance(self) -> INotify | None:
        if self._inotify is None and not self._unavailable:
            try:
                self._inotify = INotify(nonblocking=True)
            except OSError as exc:
                logger.warning("no inotify ({}): stores polled every {:g} s", exc, POLL_INTERVAL)
                self._unavailable = True
                return None
            asyncio.get_running_loop().add_reader(self._inotify.fileno(), self._drain)
        return self._inotify

    def _drain(self) -> None:
        """Read every pending event; wake the subscribers whose store was written (or all, if events were lost)."""
        assert self._inotify is not None
        try:
            events = self._inotify.read(timeout=0)
        except BlockingIOError:
            return
        for event in events:
            lost = event.mask & flags.Q_OVERFLOW
            for watch, schedules in self._subscribers.items():
                if lost or watch == event.wd:
                    for schedule in schedules:
                        if lost or event.name in schedule.names:
                            schedule.wake.set()
