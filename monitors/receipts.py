"""Carrying WhatsApp's receipts to the feedback rows: the sending account's `receipts` table, followed by id.

The bridge that sent a project's feedback (its `send_account`) stores every
server ack, delivery and read receipt in its messages.db. This follower reads
them read-only from a cursor kept in the drops store and hands each to
`DropsDB.record_receipt`, which stamps the feedback (server_at, delivered_at,
read_at: the first one stands) and writes the feedback.delivered /
feedback.read event in the same transaction. Recording is idempotent, so the
cursor is saved after the batch: a monitor killed in between records the same
receipts again and changes nothing.
"""
from __future__ import annotations

import asyncio
import sqlite3

from loguru import logger

from bridge.store import receipts_after
from monitors.drops_store import DropsDB, StoreUnavailable
from monitors.follow import POLL_INTERVAL, StoreFollower, StoreNotReady
from watchdog.config import AccountConfig

BATCH = 1000
WAIT_INTERVAL = 0.5  # how often to look for a store (or a receipts table) that is not there yet


class ReceiptFollower:
    def __init__(self, drops: DropsDB, project: str, account: AccountConfig) -> None:
        self.drops = drops
        self.account = account
        self.key = f"receipts:{project}:{account.name}"
        self.cursor: int | None = None  # read from the drops store on the first catch-up
        self.stamped = 0  # feedback rows changed by a receipt since start

    def catch_up(self, store: StoreFollower) -> None:
        """Record every receipt after the cursor.

        Raises sqlite3.OperationalError while the bridge's store has no receipts table, and
        StoreUnavailable while the drops store is down (nothing moved: the next call redoes it).
        """
        if self.cursor is None:
            self.cursor = int(self.drops.get_state(self.key) or 0)
        while batch := receipts_after(store.conn, self.cursor, BATCH):
            for receipt in batch:
                if self.drops.record_receipt(receipt.message_id, receipt.kind, receipt.at, receipt.recipient_jid):
                    self.stamped += 1
            self.cursor = batch[-1].rowid
            self.drops.set_state(self.key, str(self.cursor))
            if len(batch) < BATCH:
                break

    async def run(self) -> None:
        """Follow the sending account's store until cancelled."""
        store: StoreFollower | None = None
        told = False
        pending = False  # a catch-up failed on the drops store: redo it without waiting for a change
        try:
            while True:
                if store is None:
                    try:
                        store = StoreFollower(self.account.store)
                    except StoreNotReady:
                        await asyncio.sleep(WAIT_INTERVAL)
                        continue
                if pending or store.changed():
                    try:
                        self.catch_up(store)
                        pending = False
                    except StoreUnavailable:  # the monitor says so in its status; try again shortly
                        pending = True
                        await asyncio.sleep(WAIT_INTERVAL)
                        continue
                    except sqlite3.OperationalError as exc:  # a bridge from before receipts: no table yet
                        if not told:
                            logger.info("receipts of {} not followed yet: {}", self.account.store, exc)
                            told = True
                        store.close()
                        store = None
                        await asyncio.sleep(WAIT_INTERVAL)
                        continue
                await asyncio.sleep(POLL_INTERVAL)
        finally:
            if store is not None:
                store.close()
