"""What a client does besides sending messages, as the simulated WhatsApp records it: reactions, read
receipts, typing (`GET /sim/interactions`).

A reaction is not a message of the chat (WhatsApp shows it on the message it reacts to), so it never
enters a group's history; the reacted message must exist there, as WhatsApp refuses a reaction to an
unknown key. Kept apart from the servers' state (state.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from bridge.simulator.model import iso
from bridge.simulator.state import USER_JID, SimError, SimState
from watchdog.shared import clock


@dataclass
class Interactions:
    reactions: list[dict] = field(default_factory=list)
    reads: list[dict] = field(default_factory=list)
    presences: list[dict] = field(default_factory=list)

    def react(self, state: SimState, phone: str, frame: dict) -> dict:
        """A `send` frame carrying a `reaction` {message_id, sender_jid, from_me, emoji}; a resend of the same id
        is the same reaction."""
        reaction = frame.get("reaction")
        if not isinstance(reaction, dict) or not isinstance(reaction.get("emoji"), str):
            raise SimError("reaction: expected an object {message_id, sender_jid, from_me, emoji}")
        chat = frame.get("recipient")
        target = reaction.get("message_id")
        if isinstance(chat, str) and chat.endswith("@g.us"):
            if not any(m.id == target for m in state.group(chat).history):
                raise SimError(f"reaction: no message {target!r} in {chat}")
        known = next((r for r in self.reactions if r["id"] == frame.get("id")), None)
        if known is not None:
            return known
        record = {"session": phone, "id": frame.get("id"), "chat_jid": chat, "message_id": target,
                  "sender_jid": reaction.get("sender_jid"), "from_me": bool(reaction.get("from_me")),
                  "emoji": reaction["emoji"], "time": iso(clock.now())}
        self.reactions.append(record)
        return record

    def read(self, phone: str, frame: dict) -> None:
        ids = frame.get("message_ids")
        if not isinstance(ids, list) or not ids:
            raise SimError("message_ids: expected a non-empty list")
        self.reads.append({"session": phone, "chat_jid": frame.get("chat_jid"), "sender_jid": frame.get("sender_jid"),
                           "message_ids": ids, "at": frame.get("at")})

    def presence(self, phone: str, frame: dict) -> None:
        chat = frame.get("chat_jid")
        if not isinstance(chat, str) or not (chat.endswith("@g.us") or USER_JID.match(chat)):
            raise SimError(f"chat_jid: not a chat JID: {chat!r}")
        self.presences.append({"session": phone, "chat_jid": chat, "composing": bool(frame.get("composing")),
                               "time": iso(clock.now())})

    def json(self) -> dict:
        return {"reactions": self.reactions, "reads": self.reads, "presences": self.presences}
