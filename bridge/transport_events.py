"""What the transport tells the bridge (its `Handler`: messages, receipts, unmappable ones, connection events),
committed before the transport acknowledges; and what the store and the outbox report (poison messages set
aside, dead letters). A part of Bridge (bridge/main.py).

A store that cannot be written does not stop the bridge: health says so, nothing is acknowledged, and a batch
of messages is retried every `STORE_RETRY` seconds; a corrupt one ends the bridge with exit 2.
"""
from __future__ import annotations

import asyncio

from loguru import logger

from bridge.health import CONNECTED, STATE_OF_KIND, Health
from bridge.integrity import CorruptStore
from bridge.outbox import Outbox
from bridge.outbox_store import OutboxRow
from bridge.quarantine import Quarantined, unmappable
from bridge.schema import format_ts
from bridge.store import Store, StoreCorrupt, StoreError, StoreLocked
from bridge.transport import ConnectionEvent, ConnectionKind, IncomingMessage, Receipt, Transport
from bridge.windows import Windows
from bridge.config import AccountConfig
from watchdog.shared import clock
from watchdog.shared.child_entry import ChildEntry
from watchdog.shared.exitcodes import EXIT_CONFIG
from watchdog.shared.recovery_log import RecoveryLog

STORE_RETRY = 0.5  # seconds between attempts to store a batch the store refused (full disk, locked)


def _describe(event: ConnectionEvent) -> str:
    """A window / health reason: the transport's reason, named by the kind unless it is a plain disconnect."""
    label = event.kind.value.replace("_", " ")
    if event.kind in (ConnectionKind.DISCONNECTED, ConnectionKind.CONNECT_FAILED) or event.reason.startswith(label):
        return event.reason or label
    return f"{label}: {event.reason}" if event.reason else label


class TransportEvents:
    account: AccountConfig
    component: str
    store: Store
    transport: Transport
    health: Health
    recovery_log: RecoveryLog
    outbox: Outbox
    windows: Windows
    entry: ChildEntry
    _synced: asyncio.Event
    _stopping: bool
    _connected_at: clock.Instant
    _exit_code: int | None

    async def on_messages(self, messages: list[IncomingMessage]) -> None:
        """Commit, then return: the transport acknowledges only after this.

        While the store refuses (full disk, locked by another program) the batch is retried here, not
        acknowledged, and the loop stays free for health; a stop or a corrupt store gives up (raises).
        """
        self.health.event_seen()
        while True:
            try:
                added = self.store.add_messages(messages)
                break
            except StoreError as exc:
                self._store_failed(exc)
                if self._stopping or isinstance(exc, StoreCorrupt):
                    raise
                await asyncio.sleep(STORE_RETRY)
        if not self.health.store_writable:
            logger.info("store writable again: {} messages stored", len(messages))
        self.health.store_result("")
        if added:
            logger.info("stored {} new of {} messages", added, len(messages))

    async def on_receipts(self, receipts: list[Receipt]) -> None:
        """Commit, then return (acked after, like messages); monitors carry them to the feedback rows.

        A refused write raises: the receipts are not acknowledged, so WhatsApp (or the simulator) sends
        them again on the next connection.
        """
        self.health.event_seen()
        try:
            added = self.store.add_receipts(receipts)
        except StoreError as exc:
            self._store_failed(exc)
            raise
        if added:
            logger.debug("stored {} receipts", added)

    async def on_unmappable(self, message_id: str, chat_jid: str, reason: str, raw: str) -> None:
        self.store.quarantine([unmappable(message_id, chat_jid, reason, raw)])

    def _store_failed(self, exc: StoreError) -> None:
        """Report a store that refused a write; a corrupt one ends the bridge with exit 2."""
        if self.health.store_writable:
            logger.error("store not writable, nothing acknowledged until it is: {}", exc)
        self.health.store_result(str(exc), self.store.path.name if isinstance(exc, StoreLocked) else "")
        if isinstance(exc, StoreCorrupt) and self._exit_code is None:
            logger.error("{}", CorruptStore(self.store.path, str(exc.__cause__ or exc)))
            self._exit_code = EXIT_CONFIG
            self.entry.request_stop()

    async def on_connection(self, event: ConnectionEvent) -> None:
        self.health.event_seen()
        reason = _describe(event)
        try:
            self.store.add_connection_event(format_ts(event.at), event.kind.value, event.reason)
        except StoreError as exc:  # a diagnostic row; the state below matters more
            self._store_failed(exc)
        if event.kind == ConnectionKind.OFFLINE_SYNC_DONE:
            logger.info("offline queue replayed ({})", event.reason)
            self._synced.set()
            return
        state = STATE_OF_KIND[event.kind]
        if state is None or self._stopping or self.health.terminal:
            return  # while stopping, on_stop records the window ("bridge stopped")
        self.health.transition(state, reason)
        if event.kind == ConnectionKind.TEMPORARY_BAN:
            self._banned(event, reason)
        if state == CONNECTED:
            self.outbox.pause.lifted()
            self.outbox.pacer.connected()
            logger.info("connected to WhatsApp as {}", self.account.phone)
            self._connected_at = clock.instant(event.at.timestamp())
            self._synced.clear()
            self._spawn(self._after_connect())
            self._ready()
        else:
            try:
                self.windows.on_disconnect(reason, format_ts(event.at))
            except StoreError as exc:  # the crash-window logic of the next start covers what is lost here
                self._store_failed(exc)
            if self.health.terminal:
                logger.error("{}: not reconnecting; an operator must act (health reports {})", reason, state)
                self._spawn(self.transport.close())  # never fight over the session, whatever the transport does
                # Up as far as it will get: under systemd a missing READY=1 would mean a restart, which
                # would take the session back (stream replaced) or fail again (logged out).
                self._ready()
        self._publish_status()

    def _banned(self, event: ConnectionEvent, reason: str) -> None:
        """A temporary ban: nothing is sent until it expires (its window records it; health carries it to the
        watchdog's `temporary_ban` alert)."""
        self.outbox.pause.banned(event.until, reason)
        logger.error("{}: nothing is sent on this account until then; the transport reconnects at the expiry",
                     reason)

    def _set_aside(self, records: list[Quarantined]) -> None:
        """Poison messages: logged and one recovery-log record per batch; the rest of the batch is stored."""
        for record in records:
            logger.warning("message {} in {} {}: {}", record.message_id, record.chat_jid, record.action, record.reason)
        counts = {action: sum(r.action == action for r in records) for action in ("sanitised", "quarantined")}
        self.recovery_log.append(self.component, "quarantine", **counts,
                                 message_ids=[r.message_id for r in records][:20],
                                 message=f"{counts['sanitised']} stored sanitised, {counts['quarantined']} quarantined "
                                         f"(raw payloads in the quarantine table of {self.store.path.name})")

    def _dead_letter(self, row: OutboxRow, reason: str) -> None:
        """A send moved aside for good: one recovery-log record (the alert), then the outbox goes on."""
        self.recovery_log.append(self.component, "dead_letter", message_id=row.message_id,
                                 recipient=row.recipient_jid, message=reason)
        self._publish_status()

    def _ready(self) -> None:
        self.entry.ready()
