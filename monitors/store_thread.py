"""The drops store calls of a cluster's monitor that can wait on another host's locks, off its event loop (issue 21).

Both hosts of a cluster record every drop and stamp every receipt (each linked device gets them all). A host cut
off from PostgreSQL, or paused, in the middle of such a transaction keeps its row locks, and the other host's
insert of the same drop waits for them until a takeover ends the silent holder's sessions (monitors/store/lease.py)
or the server gives up on a silent client (`silence_bounds` in monitors/store/postgres.py). Waited for on the
monitor's event loop, such a wait stopped its heartbeat: its watchdog restarted it, it waited again, and the
takeover that would have ended the wait never came. Here the loop only awaits the call and keeps beating.

The calls run on a connection and a thread of their own, one at a time, in the order asked. The process's other
calls cannot wait on another host: reads (MVCC); rows only this node writes (its cursors and windows); feedback
that only the lease holder claims and marks, after a takeover that ended the old holder's sessions.

One host (no `[cluster]`, or drops.db): the calls run on the loop, on the process's connection, as always.
"""
from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import suppress
from typing import TYPE_CHECKING, TypeVar

from monitors.drops_store import DropsDB, StoreUnavailable, open_drops_store
from watchdog.shared.migrations import SchemaTooNew

if TYPE_CHECKING:
    from watchdog.components import Config

T = TypeVar("T")


class StoreThread:
    """`await call(work)`: `work(drops)` on the thread's own connection (a cluster), or inline (one host)."""

    def __init__(self, drops: DropsDB, own: DropsDB | None = None) -> None:
        self.drops = own or drops
        self._calls: queue.SimpleQueue[tuple[Future, Callable[[DropsDB], object]] | None] | None = None
        if own is not None:
            self._calls = queue.SimpleQueue()
            # A daemon: a call still waiting on a lock when the process stops must not hold its exit.
            threading.Thread(target=self._serve, name="drops store", daemon=True).start()

    @classmethod
    def for_config(cls, config: Config, drops: DropsDB) -> StoreThread:
        return cls(drops, open_drops_store(config) if config.cluster is not None else None)

    async def call(self, work: Callable[[DropsDB], T]) -> T:
        if self._calls is None:
            return work(self.drops)
        future: Future[T] = Future()
        self._calls.put((future, work))
        return await asyncio.wrap_future(future)

    def _serve(self) -> None:
        assert self._calls is not None
        # Connect (and check the schema) now: the first drop's recording must not pay for it (~0.1 s under load).
        # Down or too new: the process's own connection reports it; the first call tries again.
        with suppress(StoreUnavailable, SchemaTooNew):
            self.drops.db.connect()  # type: ignore[attr-defined]  # PostgreSQL: a cluster's store
        while (item := self._calls.get()) is not None:
            future, work = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(work(self.drops))
                except BaseException as exc:  # noqa: BLE001: the caller's await raises it
                    future.set_exception(exc)
        self.drops.close()

    def close(self) -> None:
        """Closes the thread's connection after the call under way (if any); one host: nothing of its own."""
        if self._calls is not None:
            self._calls.put(None)
