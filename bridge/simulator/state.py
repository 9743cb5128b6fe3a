"""The simulated WhatsApp servers' state: groups, their history, per-session offline queues, sends, media.

Plain objects with no I/O, so the server stays a thin layer of handlers over
them. Everything lives in memory: the simulator is a separate process and
outlives bridge crashes, as WhatsApp's servers do; a simulator restart is a
"WhatsApp data loss" nobody needs to model. The objects it holds: model.py.
"""
from __future__ import annotations

import base64
import hashlib
import itertools
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone

from bridge.config import GROUP_JID
from bridge.simulator.model import Group, Media, Message, Sent, Session, SimReceipt
from watchdog.components import Config
from watchdog.shared import clock

USER_JID = re.compile(r"^[0-9]+@s\.whatsapp\.net$")
MEDIA_TYPES = ("image", "video", "audio", "document")


class SimError(ValueError):
    """Bad input from a client or the control API; the message says what is wrong."""


def parse_time(text: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        # An unencoded "+00:00" in a query string arrives as " 00:00".
        head, _, tail = text.rpartition(" ") if isinstance(text, str) else ("", "", "")
        try:
            moment = datetime.fromisoformat(f"{head}+{tail}")
        except ValueError:
            raise SimError(f"{name}: not an ISO-8601 time: {text!r}") from None
    if moment.tzinfo is None:
        raise SimError(f"{name}: needs a timezone (e.g. 2026-11-24T22:31:27+00:00): {text!r}")
    return moment.astimezone(timezone.utc)


class SimState:
    def __init__(self, config: Config) -> None:
        assert config.sim is not None
        self.sessions = {a.phone: Session(a.phone) for a in config.accounts.values() if a.transport == "sim"}
        self.groups = {g.jid: Group(g.jid, g.name, list(g.participants)) for g in config.sim.groups}
        self.members = {phone: self.member_of(phone) for phone in self.sessions}
        self.devices: dict[str, list[Session]] = {phone: [session] for phone, session in self.sessions.items()}
        self.sent: dict[str, Sent] = {}  # by message id: a resend with a known id is the same message
        self.blobs: dict[str, bytes] = {}  # media url -> bytes
        self._ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(4).upper()  # ids stay unique across simulator restarts

    def member_of(self, phone: str) -> frozenset[str]:
        """The groups a number is in: those that list it among their participants. A number no group lists
        is in every group (configs that list only the contractors who post, as the demo does)."""
        listed = frozenset(jid for jid, group in self.groups.items() if phone in group.participants)
        return listed or frozenset(self.groups)

    def device(self, phone: object, node: object = "") -> Session | None:
        """The device (phone, node) of a known number, linked on its first hello (each host pairs once);
        None for a number the simulator does not know."""
        if not isinstance(phone, str) or phone not in self.sessions or not isinstance(node, str):
            return None
        for device in self.devices[phone]:
            if device.node == node:
                return device
        device = Session(phone, node)
        self.devices[phone].append(device)
        return device

    def all_devices(self) -> Iterator[Session]:
        for devices in self.devices.values():
            yield from devices

    # -- posting ---------------------------------------------------------------

    def new_id(self) -> str:
        return f"SIM{self._id_prefix}{next(self._ids):08d}"

    def group(self, jid: object) -> Group:
        if not isinstance(jid, str) or not GROUP_JID.match(jid):
            raise SimError(f"chat_jid: not a group JID (like 120363000000000001@g.us): {jid!r}")
        try:
            return self.groups[jid]
        except KeyError:
            raise SimError(f"chat_jid: unknown group {jid} (known: {', '.join(self.groups) or 'none'})") from None

    def post(self, group: Group, sender_jid: str, text: str, media: Media | None = None,
             message_id: str | None = None, at: datetime | None = None, skip: Session | None = None,
             quoted_message_id: str | None = None) -> Message:
        """Add a message to a group's history and queue it for every device of every member except `skip` (the
        device that sent it: its siblings receive it, from their own number)."""
        message = Message(message_id or self.new_id(), group.jid, group.name, sender_jid, text, at or clock.now(), media,
                          quoted_message_id)
        group.add(message)
        for phone, devices in self.devices.items():
            if group.jid in self.members[phone]:  # WhatsApp delivers to members only
                for device in devices:
                    if device is not skip:
                        device.enqueue(message)
        return message

    def inject(self, body: object) -> list[Message]:
        """POST /sim/inject: participants post into groups (`quoted_message_id`: a reply); one object, or a list
        posted all-or-nothing."""
        items = body if isinstance(body, list) else [body]
        checked = [self._checked_post(item, f"[{i}] " if isinstance(body, list) else "") for i, item in enumerate(items)]
        return [self.post(group, sender, text, media, quoted_message_id=quoted)
                for group, sender, text, media, quoted in checked]

    def _checked_post(self, body: object, where: str) -> tuple[Group, str, str, Media | None, str | None]:
        if not isinstance(body, dict):
            raise SimError(f"{where or 'body: '}expected a JSON object {{chat_jid, sender_jid, text, media?}}")
        try:
            group = self.group(body.get("chat_jid"))
            sender = body.get("sender_jid")
            if not isinstance(sender, str) or not USER_JID.match(sender):
                raise SimError(f"sender_jid: not a user JID (like 27710000001@s.whatsapp.net): {sender!r}")
            media = self.store_media(body["media"], "media") if body.get("media") is not None else None
            text = body.get("text", "" if media else None)
            if not isinstance(text, str):
                raise SimError("text: missing (a string; may be empty only with media)")
            quoted = body.get("quoted_message_id")
            if quoted is not None and not isinstance(quoted, str):
                raise SimError(f"quoted_message_id: expected a message id, got {quoted!r}")
        except SimError as exc:
            raise SimError(f"{where}{exc}") from None
        return group, sender, text, media, quoted

    def store_media(self, raw: object, name: str) -> Media:
        if not isinstance(raw, dict):
            raise SimError(f"{name}: expected an object {{type, filename, data_b64}}")
        media_type, filename, data_b64 = raw.get("type"), raw.get("filename"), raw.get("data_b64")
        if media_type not in MEDIA_TYPES:
            raise SimError(f"{name}.type: must be one of {', '.join(MEDIA_TYPES)}, got {media_type!r}")
        if not isinstance(filename, str) or not filename:
            raise SimError(f"{name}.filename: missing")
        if not isinstance(data_b64, str):
            raise SimError(f"{name}.data_b64: missing (the file's bytes, base64)")
        try:
            data = base64.b64decode(data_b64, validate=True)
        except ValueError:
            raise SimError(f"{name}.data_b64: not valid base64") from None
        url = f"sim://media/{secrets.token_hex(8)}"
        key = os.urandom(32)
        self.blobs[url] = data
        return Media(media_type, filename, url, key, hashlib.sha256(data).digest(),
                     hashlib.sha256(key + data).digest(), len(data))

    # -- session requests -------------------------------------------------------

    def send(self, session: Session, body: dict) -> Sent:
        """A bridge sends; the client chose the id, so a known id returns the first record unchanged. A device whose
        client cannot choose ids (`server_ids`) gets a new one for every send: the same text again is a second
        message."""
        message_id = "3EB0" + secrets.token_hex(9).upper() if session.server_ids else body.get("id")
        if not isinstance(message_id, str) or not message_id:
            raise SimError("id: missing (the client chooses the message id)")
        if message_id in self.sent:
            session.resent += 1
            return self.sent[message_id]
        recipient, text = body.get("recipient"), body.get("text", "")
        mentions = body.get("mentioned_jids") or []
        if not isinstance(text, str):
            raise SimError("text: expected a string")
        if not isinstance(mentions, list) or not all(isinstance(j, str) and USER_JID.match(j) for j in mentions):
            raise SimError(f"mentioned_jids: expected a list of user JIDs, got {mentions!r}")
        group = None
        if isinstance(recipient, str) and recipient.endswith("@g.us"):
            group = self.group(recipient)
        elif not isinstance(recipient, str) or not USER_JID.match(recipient):
            raise SimError(f"recipient: neither a group JID nor a user JID: {recipient!r}")
        media = self.store_media(body["media"], "media") if body.get("media") is not None else None
        quote = body.get("quote")
        if quote is not None and not (isinstance(quote, dict) and isinstance(quote.get("message_id"), str)):
            raise SimError(f"quote: expected an object {{message_id, sender_jid, text}}, got {quote!r}")
        sent = Sent(session.phone, message_id, recipient, text, tuple(mentions),
                    media.media_type if media else None, clock.now(), quote, session.node)
        self.sent[message_id] = sent
        if group is not None:
            self.post(group, session.jid, text, media, message_id=message_id, at=sent.time, skip=session,
                      quoted_message_id=quote["message_id"] if quote else None)
        self._receipts(sent, "delivered", self.recipients(sent))  # delivered at once; read on POST /sim/read
        return sent

    def recipients(self, sent: Sent) -> list[str]:
        """Who receives a sent message: the group's participants and whoever it mentions, or the user."""
        if not sent.recipient.endswith("@g.us"):
            return [sent.recipient]
        members = [f"{phone}@s.whatsapp.net" for phone in self.groups[sent.recipient].participants]
        return [jid for jid in dict.fromkeys([*members, *sent.mentioned_jids]) if jid != f"{sent.session}@s.whatsapp.net"]

    def _receipts(self, sent: Sent, kind: str, readers: Iterable[str]) -> int:
        """Receipts reach every device of the sending number; returns how many readers."""
        devices = self.devices.get(sent.session, [])
        count = 0
        for reader in readers:
            if devices:
                receipt = SimReceipt(f"{kind}:{sent.id}:{reader}", sent.id, sent.recipient, reader, kind, clock.now())
                for device in devices:
                    device.enqueue(receipt)
                count += 1
        return count

    def read(self, body: object) -> int:
        """POST /sim/read {"id", "reader"?}: recipients read a sent message (all of them without `reader`)."""
        if not isinstance(body, dict):
            raise SimError("body: expected a JSON object {id, reader?}")
        sent = self.sent.get(body.get("id"))  # type: ignore[arg-type]
        if sent is None:
            raise SimError(f"id: no message sent with id {body.get('id')!r}")
        recipients = self.recipients(sent)
        reader = body.get("reader")
        if reader is not None and reader not in recipients:
            raise SimError(f"reader: {reader!r} did not receive {sent.id} (recipients: {', '.join(recipients)})")
        return self._receipts(sent, "read", [reader] if reader else recipients)

    def history(self, chat_jid: object, since: object, until: object) -> list[Message]:
        group = self.group(chat_jid)
        lo = parse_time(since, "since") if since else None
        hi = parse_time(until, "until") if until else None
        return group.between(lo, hi)

    def download(self, url: object) -> bytes:
        try:
            return self.blobs[url]  # type: ignore[index]
        except (KeyError, TypeError):
            raise SimError(f"url: no such media: {url!r}") from None

    def sent_by(self, session: str | None) -> list[dict]:
        return [s.json() for s in self.sent.values() if session is None or s.session == session]
