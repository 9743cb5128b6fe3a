"""Carrying WhatsApp's receipts to the feedback rows: the sending account's `receipts` table, followed by id.

The bridge that sent a project's feedback (its `send_account`) stores every
server ack, delivery and read receipt in its messages.db. One follower per
sending account reads them read-only (woken by its monitor process's inotify
instance) from a cursor kept in the drops store, and hands each look's batch to
`DropsDB.record_receipts`: one read to find which are feedback, one
transaction stamping those (server_at, delivered_at, read_at: the first one
stands) with their feedback.delivered / feedback.read events.

One per account, not one per project: a number's receipts are the same for
every project that sends with it, and matching is by message id. So the
monitor process holding the account's first sending project follows them
(`receipt_accounts`); N followers of one store would cost every receipt N
reads and, on PostgreSQL, N round trips on the drop path's event loops.

A receipt can be stored before the feedback row knows its message: WhatsApp
delivers in milliseconds, while the monitor records the bridge's answer (the
message id) only when its POST returns. So a receipt that matched nothing is
kept and tried again for `GRACE` seconds, and the saved cursor stays before
the oldest such receipt: a restart reads it again (recording is idempotent)
instead of skipping it. Receipts of messages that are not feedback (anything
else the number sent) age out of the grace window and are passed over. A
receipt's age when first read is its own time's (WhatsApp's) against the wall
clock, within 0..GRACE; from then on it ages on the boot's clock, which no step
moves: a wall clock stepped an hour back kept strangers' receipts, and the
saved cursor, waiting for an hour, and one stepped forward aged out at once a
receipt waiting for its feedback's answer.
"""
from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from typing import NamedTuple

from loguru import logger

from bridge.schema import parse_ts
from bridge.store import StoredReceipt, receipts_after
from monitors.drops_store import DropsDB, StoreUnavailable
from monitors.follow import StoreFollower, StoreNotReady
from monitors.store_thread import StoreThread
from monitors.store_watch import StoreWakes, WakeSchedule
from bridge.config import AccountConfig
from monitors.config import ProjectConfig
from watchdog.components import Config
from watchdog.shared import clock

BATCH = 1000
WAIT_INTERVAL = 0.5  # how often to look for a store (or a receipts table) that is not there yet
GRACE = 15.0  # seconds a receipt may precede the recorded answer naming its message (the bridge answers in ms)
RETRY_INTERVAL = 1.0  # how often receipts that matched nothing yet are tried again (one read for all of them)


class Waiting(NamedTuple):
    receipt: StoredReceipt
    seen: float  # on clock.boottime(): when it was (by its own time, within GRACE) as this follower first read it


def first_read(receipt: StoredReceipt) -> Waiting:
    age = (clock.now() - parse_ts(receipt.at)).total_seconds()  # < 0: the wall clock was stepped back since
    return Waiting(receipt, clock.boottime() - min(max(age, 0.0), GRACE))


def receipt_accounts(config: Config, projects: list[ProjectConfig]) -> list[AccountConfig]:
    """The sending accounts whose receipts a monitor process of `projects` follows (Config.first_senders)."""
    held = {project.name for project in projects}
    return [config.account(account) for account, project in config.first_senders().items() if project in held]


class ReceiptFollower:
    def __init__(self, drops: DropsDB, account: AccountConfig, wakes: StoreWakes,
                 writes: StoreThread | None = None, reader: str = "") -> None:
        self.drops = drops
        self.writes = writes or StoreThread(drops)  # stamping, which can wait on another host's locks (a cluster)
        self.account = account
        self.wakes = wakes  # the monitor process's: one inotify instance for the process
        # How far this host read the account's receipts: in a cluster each host's messages.db numbers its rows
        # its own way, so the position is the host's (`reader`: monitors/cluster_config.py reader_key).
        self.key = f"receipts:{reader or account.name}"
        self.cursor: int | None = None  # the last receipt read; from the drops store on the first catch-up
        self.waiting: list[Waiting] = []  # matched no feedback yet, still within GRACE (oldest first)
        self.stamped = 0  # feedback rows changed by a receipt since start
        self._retried = 0.0
        self._saved: int | None = None  # the position last written to the drops store

    async def _record(self, receipts: list[Waiting]) -> list[Waiting]:
        """Stamp a batch; returns the receipts of messages not known as feedback yet that are still young."""
        stamps = [w.receipt for w in receipts]
        known, changed = await self.writes.call(lambda drops: drops.record_receipts(stamps))
        self.stamped += changed
        now = clock.boottime()
        return [w for w in receipts if w.receipt.message_id not in known and now - w.seen < GRACE]

    async def retry_waiting(self) -> None:
        """Try the receipts that matched nothing yet again; drop the ones that matched or aged out."""
        self._retried = time.monotonic()
        self.waiting = await self._record(self.waiting)
        self._save()

    async def catch_up(self, store: StoreFollower) -> None:
        """Record every receipt after the cursor.

        Raises sqlite3.OperationalError while the bridge's store has no receipts table, and
        StoreUnavailable while the drops store is down (nothing saved: the next call redoes it).
        """
        if self.cursor is None:
            self.cursor = int(self.drops.get_state(self.key) or 0)
        while batch := receipts_after(store.conn, self.cursor, BATCH):
            self.waiting += await self._record([first_read(receipt) for receipt in batch])
            self.cursor = batch[-1].rowid
            self._save()
            if len(batch) < BATCH:
                break

    def _save(self) -> None:
        if self.cursor is not None:
            saved = self.waiting[0].receipt.rowid - 1 if self.waiting else self.cursor
            if saved != self._saved:  # a write to the shared drops store only when the position moved
                self.drops.set_state(self.key, str(saved))
                self._saved = saved

    def retry_due(self) -> bool:
        return bool(self.waiting) and time.monotonic() - self._retried >= RETRY_INTERVAL

    async def run(self) -> None:
        """Follow the sending account's store until cancelled: woken through the monitor's StoreWakes like its
        own follower (a look every SAFETY_INTERVAL anyway, or every POLL_INTERVAL without inotify)."""
        store: StoreFollower | None = None
        schedule: WakeSchedule | None = None
        told = False
        pending = False  # a catch-up is due: a commit was seen, or its catch-up failed on the drops store

        def close() -> None:
            nonlocal store, schedule
            if schedule is not None:
                schedule.close()
            if store is not None:
                store.close()
            store, schedule = None, None

        try:
            while True:
                if store is None or schedule is None:  # set and cleared together
                    try:
                        store = StoreFollower(self.account.store)
                    except StoreNotReady:
                        await asyncio.sleep(WAIT_INTERVAL)
                        continue
                    schedule = self.wakes.subscribe(store.path, asyncio.Event())
                try:
                    if store.changed():
                        schedule.committed()
                        pending = True
                    if pending:
                        await self.catch_up(store)
                        pending = False
                    if self.retry_due():
                        await self.retry_waiting()
                except StoreUnavailable:  # the monitor says so in its status; try again shortly
                    pending = True
                    await asyncio.sleep(WAIT_INTERVAL)
                    continue
                except sqlite3.OperationalError as exc:  # a bridge from before receipts: no table yet
                    if not told:
                        logger.info("receipts of {} not followed yet: {}", self.account.store, exc)
                        told = True
                    close()
                    await asyncio.sleep(WAIT_INTERVAL)
                    continue
                await schedule.next_look(RETRY_INTERVAL if self.waiting else math.inf)
        finally:
            close()
