"""Sends of unknown fate in a cluster (issue 21): found out, not guessed.

A host that takes the sender lease over may find pending feedback another host handed to its bridge
(monitors/store/handed.py) and never marked: that host died between the two, so the message may or may
not be in the group. Posting it again is one message only where the transport lets the sender choose the
message id (the simulator: the bridge derives it from the Idempotency-Key, bridge/outbox.py); neonize cannot,
so through real WhatsApp it would be a second one. So the new holder first looks for the other host's copy:
both hosts are linked devices of one number, and every device receives a copy of what its siblings send
(from-me), which this host's bridge stores in its own messages.db like any message.

- **Found** (the message id derived from the key, else a faithful match: same chat, from me, the same text,
  not long before the other host handed it, and no other feedback's message): marked sent with that message's
  id, nothing posted.
- **Not found, and this host's bridge has been connected `copy_grace_s` since the later of its connect and the
  moment this host met the doubt**: the copy would have arrived (live, or in the offline queue replayed on
  connect), so the message never went: it is posted.
- **Otherwise**, once `unknown_after_s` passed since this host met the doubt: the feedback is `unknown`, said in
  the recovery log and an alert, and an operator decides (`wa-watchdog feedback --mark-sent | --resend`).
  Never a second send by itself. Until then the row waits and is judged again. Its copy arriving later (this
  host's bridge was away) still marks it sent (`found_later`, looked for every 5 s by the lease holder).

A reaction acknowledgement is not looked for: the bridge stores no reactions (they are not messages of the
chat), and it needs no looking for: a number has one reaction per message, so the same emoji again sets what
is already there instead of adding a message. It is posted again, and the recovery log says so.

What this cannot see is a send the other host's bridge makes *after* this host decided (its durable outbox
holding the row): that bridge must refuse rows whose lease is gone (the outbox's fence).
"""
from __future__ import annotations

import sqlite3
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import timedelta

from loguru import logger

from bridge.schema import format_ts, open_readonly, parse_ts
from monitors.alert_rules import FEEDBACK_UNKNOWN
from monitors.config import ClusterConfig, ProjectConfig
from monitors.drops_store import (FEEDBACK_SENT, FEEDBACK_UNKNOWN as UNKNOWN, KIND_ACK, DropsDB, Feedback,
                                  Fence)
from monitors.store.copies import CopySource, MessagesCopies, PublishedCopies
from monitors.store.handed import Handed, handed, known_messages
from watchdog.components import Config
from watchdog.shared.alerts import AlertManager
from watchdog.shared.recovery_log import RecoveryLog

SKEW_S = 60.0  # a copy counts from this long before the other host's handed_at (its clock, not WhatsApp's)
RECHECK_S = 1.0  # a send in doubt is judged again this soon while it waits

FOUND, SEND, WAIT = "found", "send", "wait"  # and UNKNOWN: the verdicts


@dataclass(frozen=True)
class Copy:
    """The other host's message as this host's device received it: its id, and how it was recognised."""

    message_id: str
    how: str  # "id" (derived from the Idempotency-Key) | "text" (chat, from me, text, time)


def is_reaction(feedback: Feedback, ack: str) -> bool:
    return feedback.kind == KIND_ACK and ack == "reaction"


def find_copy(source: CopySource, own_jid: str, feedback: Feedback, since: str,
              taken: Collection[str] = ()) -> Copy | None:
    """The from-me message in `source` (a messages.db, or the copies the hosts published) that is `feedback` as
    another device of `own_jid` sent it.

    By the message id the bridge derives from the Idempotency-Key (where the transport let it choose the id);
    else the first message of the chat from me with the same text at or after `since` (the time the other host
    handed it on, less SKEW_S) whose id is not in `taken` (messages already known as other feedback).
    """
    from bridge.outbox_answers import new_message_id  # only here: the monitor needs nothing else of the outbox
    derived = new_message_id(own_jid, feedback.idempotency_key)
    if source.has(derived, feedback.recipient):
        return Copy(derived, "id")
    earliest = format_ts(parse_ts(since) - timedelta(seconds=SKEW_S))
    for message_id in source.with_text(feedback.recipient, feedback.text, earliest):
        if message_id not in taken:
            return Copy(message_id, "text")
    return None


@dataclass(frozen=True)
class Connection:
    """This host's sending bridge as its health answer says: how long it has been connected (None: it is not)."""

    connected_for_s: float | None
    caught_up: bool

    @classmethod
    def of(cls, health: dict | None) -> Connection:
        if not isinstance(health, dict) or not isinstance(health.get("connected_for_s"), (int, float)):
            return cls(None, False)
        return cls(float(health["connected_for_s"]), bool(health.get("caught_up")))


class Fates:
    """One project's sends in doubt, as its feedback sender meets them: judged, then marked or let through."""

    def __init__(self, config: Config, project: ProjectConfig, cluster: ClusterConfig, drops: DropsDB,
                 log: RecoveryLog | None = None, alerts: AlertManager | None = None) -> None:
        self.config = config
        self.project = project
        self.cluster = cluster
        self.drops = drops
        self.log = log
        self.alerts = alerts
        self._met: dict[str, float] = {}  # idempotency key of a message in doubt -> when this process met it
        self._lost: set[str] = set()  # idempotency keys whose answer this node's own bridge lost (in doubt there)

    def doubted(self, rows: Sequence[Feedback]) -> dict[int, Handed]:
        """Rows of `rows` another node handed to its bridge, and those this node's bridge said it lost the answer
        of (`lost`; the rest of this node's own: its bridge's outbox knows the key and answers for it)."""
        found = handed(self.drops.db, [r.id for r in rows])
        return {r.id: found[r.id] for r in rows if r.id in found and
                (found[r.id].node != self.cluster.node or r.idempotency_key in self._lost)}

    def handed_on(self, rows: Sequence[Feedback]) -> set[int]:
        """Ids of `rows` some node (this one too) handed to its bridge: posted again as they were (their key may be
        held there, in doubt if its answer was lost), never joined to a new message."""
        return set(handed(self.drops.db, [r.id for r in rows]))

    def lost(self, message: Feedback, rows: Sequence[Feedback]) -> None:
        """This node's bridge answered `message` (carrying `rows`) in doubt (bridge/outbox.py: handed to WhatsApp,
        its answer lost, never sent again there): found out like another node's send, through the other host's
        copy."""
        self._lost.update([message.idempotency_key, *(row.idempotency_key for row in rows)])

    def _copy(self, message: Feedback, since: str) -> Copy | None:
        """The other host's copy: in the store of any of the project's sending accounts on this host, else among
        the copies the hosts published (`device_copies`: a send this host's own bridge made is only there)."""
        names = self.project.send_accounts or [self.project.send_account]
        for name in names:
            account = self.config.account(name)
            if not account.store.exists():
                continue
            conn = open_readonly(account.store)
            try:
                found = self._match(MessagesCopies(conn), account.jid, message, since)
            except sqlite3.OperationalError as exc:  # no messages table yet: nothing received
                logger.debug("fate of feedback {}: {} not readable: {}", message.id, account.store, exc)
                found = None
            finally:
                conn.close()
            if found is not None:
                return found
        for name in names:
            jid = self.config.account(name).jid
            if (found := self._match(PublishedCopies(self.drops.db, jid), jid, message, since)) is not None:
                return found
        return None

    def _match(self, source: CopySource, own_jid: str, message: Feedback, since: str) -> Copy | None:
        """find_copy, leaving out this chat's from-me messages with this text already other feedback's."""
        taken = known_messages(self.drops.db, source.with_text(message.recipient, message.text))
        return find_copy(source, own_jid, message, since, taken)

    def judge(self, message: Feedback, doubt: Handed, connection: Connection) -> tuple[str, Copy | None]:
        """FOUND (with the copy), SEND, WAIT or UNKNOWN for `message` (a row, or a coalesced message)."""
        now = time.monotonic()
        met = self._met.setdefault(message.idempotency_key, now)
        if is_reaction(message, self.project.feedback.ack):
            return SEND, None
        own = doubt.node == self.cluster.node  # its answer lost here: a device gets no copy of its own sends
        copy = self._copy(message, message.created_at if own else doubt.at)
        if copy is not None:
            return FOUND, copy
        if not own and connection.connected_for_s is not None and connection.caught_up:
            since = max(now - connection.connected_for_s, met)
            if now - since >= self.cluster.copy_grace_s:
                return SEND, None
        if now - met >= self.cluster.unknown_after_s:
            return UNKNOWN, None
        return WAIT, None

    def settle(self, verdict: str, copy: Copy | None, message: Feedback, members: Sequence[Feedback],
               doubt: Handed, fence: Fence) -> None:
        """Record a verdict other than WAIT: mark FOUND sent and UNKNOWN unknown (fenced), log and alert."""
        self._met.pop(message.idempotency_key, None)
        self._lost.difference_update([message.idempotency_key, *(m.idempotency_key for m in members)])
        what = ", which lost its answer" if doubt.node == self.cluster.node else " and stopped before marking it"
        head = (f"feedback for {', '.join(m.drop_number for m in members)}: {doubt.node} had handed it to its bridge "
                f"(token {doubt.token}){what}; ")
        if verdict == FOUND and copy is not None:
            for member in members:
                self.drops.finish_feedback(member, FEEDBACK_SENT, "", copy.message_id, fence=fence)
            summary = head + f"its copy is here ({copy.message_id}, matched by {copy.how}): marked sent, not sent again"
        elif verdict == UNKNOWN:
            why = (f"handed to {doubt.node}'s bridge at {doubt.at}; its copy was not seen and this host's bridge was "
                   "not connected long enough to know" if doubt.node != self.cluster.node else
                   f"handed to {doubt.node}'s bridge, which lost its answer; no other host's device reported a copy")
            for member in members:
                self.drops.finish_feedback(member, UNKNOWN, why, fence=fence)
            summary = head + (f"no copy seen within {self.cluster.unknown_after_s:g} s and this host's bridge was not "
                              f"connected {self.cluster.copy_grace_s:g} s: unknown, an operator decides "
                              "(wa-watchdog feedback --mark-sent | --resend)")
        elif is_reaction(message, self.project.feedback.ack):
            summary = head + "a reaction: set again (the same emoji on the same message is the same reaction)"
        else:
            summary = head + f"no copy here after {self.cluster.copy_grace_s:g} s connected: sending it"
        (logger.error if verdict == UNKNOWN else logger.warning)(summary)
        if self.log is not None:
            self.log.append(self.project.component, "feedback_fate", outcome=verdict, project=self.project.name,
                            drops=[m.drop_number for m in members], feedback=[m.id for m in members],
                            handed_by=doubt.node, handed_token=doubt.token, handed_at=doubt.at,
                            token=fence.token, message_id=copy.message_id if copy else None,
                            matched_by=copy.how if copy else None, message=summary)
        if verdict == UNKNOWN and self.alerts is not None:
            self.alerts.fire(FEEDBACK_UNKNOWN, self._alert_key(members[0]), summary)

    def found_later(self, message: Feedback, rows: Sequence[Feedback]) -> bool:
        """Feedback of unknown fate (`rows`, carried by `message`) whose copy has arrived since (this host's bridge
        was away when it was judged): marked sent with the copy's id, the alert resolved. False: still no copy."""
        doubt = handed(self.drops.db, [rows[0].id]).get(rows[0].id)
        copy = self._copy(message, doubt.at) if doubt is not None else None
        if doubt is None or copy is None:
            return False
        for row in rows:
            self.drops.decide_unknown(row.id, FEEDBACK_SENT, copy.message_id)
        summary = (f"feedback for {', '.join(r.drop_number for r in rows)} (unknown): {doubt.node}'s copy has arrived "
                   f"({copy.message_id}, matched by {copy.how}): marked sent, not sent again")
        logger.warning(summary)
        if self.log is not None:
            self.log.append(self.project.component, "feedback_fate", outcome=FOUND, later=True,
                            project=self.project.name, drops=[r.drop_number for r in rows],
                            feedback=[r.id for r in rows], handed_by=doubt.node, handed_token=doubt.token,
                            handed_at=doubt.at, message_id=copy.message_id, matched_by=copy.how, message=summary)
        if self.alerts is not None:
            self.alerts.resolve(FEEDBACK_UNKNOWN, self._alert_key(rows[0]), summary)
        return True

    def _alert_key(self, row: Feedback) -> str:
        return f"{self.project.component}:feedback:{row.id}"
