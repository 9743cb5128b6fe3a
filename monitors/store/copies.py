"""Where a copy of a sent message can be found (issue 21): a host's messages.db, and the drops store's
`device_copies` (schema 13), where every host's monitors publish the from-me messages their bridge received from a
sibling device.

A linked device receives a copy of what its sibling devices send, never of its own sends. So a host whose own
bridge lost a send's answer cannot find the message in its own messages.db: the copy is in the other host's, and
reaches this host through `device_copies`. monitors/fate.py matches against either through `CopySource`.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Protocol

from bridge.schema import StoredMessage
from monitors.store.sql import Backend

# Kept as long as a send can stay in doubt and be found later (monitors/fate.py's found_later): a day is plenty.
KEEP_S = 86400


class CopySource(Protocol):
    """From-me messages of one account, as fate matches them."""

    def has(self, message_id: str, chat_jid: str) -> bool:
        """Is the from-me message `message_id` in `chat_jid` here?"""

    def with_text(self, chat_jid: str, text: str, earliest: str | None = None) -> list[str]:
        """Ids of the chat's from-me messages with this text (at or after `earliest`, if given), oldest first."""


class MessagesCopies:
    """A messages.db (read-only connection): every from-me message the bridge stored, its own sends included."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def has(self, message_id: str, chat_jid: str) -> bool:
        return self.conn.execute("SELECT 1 FROM messages WHERE id = ? AND chat_jid = ? AND is_from_me",
                                 (message_id, chat_jid)).fetchone() is not None

    def with_text(self, chat_jid: str, text: str, earliest: str | None = None) -> list[str]:
        return [row[0] for row in self.conn.execute(
            "SELECT id FROM messages WHERE chat_jid = ? AND is_from_me AND content = ? AND (? IS NULL OR "
            "timestamp >= ?) ORDER BY timestamp, rowid", (chat_jid, text, earliest, earliest))]


class PublishedCopies:
    """`device_copies` of the account `account` (its JID): what any host's device received from a sibling."""

    def __init__(self, db: Backend, account: str) -> None:
        self.db = db
        self.account = account

    def has(self, message_id: str, chat_jid: str) -> bool:
        return bool(self.db.rows("SELECT 1 FROM device_copies WHERE account = ? AND message_id = ? AND chat_jid = ? "
                                 "LIMIT 1", (self.account, message_id, chat_jid)))

    def with_text(self, chat_jid: str, text: str, earliest: str | None = None) -> list[str]:
        since, params = (" AND timestamp >= ?", (earliest,)) if earliest is not None else ("", ())
        rows = self.db.rows(f"SELECT message_id, MIN(timestamp) AS at FROM device_copies WHERE account = ? AND "
                            f"chat_jid = ? AND content = ?{since} GROUP BY message_id ORDER BY at, message_id",
                            (self.account, chat_jid, text, *params))
        return [row[0] for row in rows]


def sibling_copies(messages: Sequence[StoredMessage]) -> list[StoredMessage]:
    """The from-me messages of `messages` this bridge did not send itself: copies of a sibling device's sends."""
    return [m for m in messages if m.is_from_me and m.source != "sent"]


def publish(db: Backend, account: str, node: str, copies: Sequence[StoredMessage], older_than: str) -> None:
    """Publish `copies` (of the account `account`, seen by `node`'s device); idempotent. Copies older than
    `older_than` are dropped in the same transaction (nothing looks for them any more)."""
    with db.transaction() as tx:
        for m in copies:
            tx.run("INSERT INTO device_copies (account, node, message_id, chat_jid, content, timestamp) VALUES "
                   "(?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", (account, node, m.id, m.chat_jid, m.content,
                                                                 m.timestamp))
        tx.run("DELETE FROM device_copies WHERE account = ? AND node = ? AND timestamp < ?",
               (account, node, older_than))
