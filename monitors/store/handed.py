"""Which node handed a feedback row to its bridge, under which token, and when (drops schema 12; issue 21).

In a cluster the holder of the sender lease records this, fenced, just before it posts a row to its bridge: the
one moment after which the message may be in WhatsApp without the row saying so (the holder can die before its
"sent" mark). A host that takes the lease over reads it to tell the pending rows another host may already have
sent (in doubt: monitors/fate.py finds out) from the ones nobody handed on. One host alone records nothing here.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bridge.schema import now_ts
from monitors.store.fence import FENCE, Fence, LeaseLost
from monitors.store.sql import Backend


@dataclass(frozen=True)
class Handed:
    """A row's last hand-over to a bridge: the node, its token then, and when (that node's clock)."""

    node: str
    token: int
    at: str


def hand(db: Backend, ids: Sequence[int], fence: Fence) -> None:
    """Record that this holder hands rows `ids` (claimed under `fence`) to its bridge now: LeaseLost (nothing
    written) when the grant is no longer current or another holder claimed them since."""
    marks = ", ".join("?" * len(ids))
    with db.transaction() as tx:
        done = tx.rows(f"UPDATE feedback SET handed_by = ?, handed_token = ?, handed_at = ? WHERE id IN ({marks}) "
                       f"AND claim_token = ? AND {FENCE} RETURNING id",
                       (fence.holder, fence.token, now_ts(), *ids, fence.token, *fence.params))
        if len(done) != len(ids):
            raise LeaseLost(f"feedback {', '.join(map(str, ids))}: {fence.account}'s sender lease is no longer "
                            f"{fence.holder}'s token {fence.token}")


def handed(db: Backend, ids: Sequence[int]) -> dict[int, Handed]:
    """The rows of `ids` some node handed to its bridge: id -> who, under which token, when."""
    if not ids:
        return {}
    rows = db.rows(f"SELECT id, handed_by, handed_token, handed_at FROM feedback WHERE id IN "
                   f"({', '.join('?' * len(ids))}) AND handed_by IS NOT NULL", list(ids))
    return {row[0]: Handed(row[1], row[2], str(row[3])) for row in rows}


def known_messages(db: Backend, message_ids: Sequence[str]) -> set[str]:
    """The ones of `message_ids` that are already some feedback's message: a copy counts for one row only."""
    if not message_ids:
        return set()
    return {row[0] for row in db.rows(f"SELECT bridge_message_id FROM feedback WHERE bridge_message_id IN "
                                      f"({', '.join('?' * len(message_ids))})", list(message_ids))}

