"""Test support for the neonize transport: a linked session store, and a stand-in for neonize's Go library.

`FakeGo` replaces only the object a real `neonize.client.NewClient` calls
into (its `gocode`, the Go shared library that holds the WhatsApp socket). The
Python side stays neonize's own: `connect()` runs its worker thread, events
arrive through the real ctypes event callback as serialized protobuf bytes
(decoded by neonize's `Event.execute`), and sends serialize the real
`waE2E.Message` that the Go side would encrypt and send. Like Go's
CallbackFunction, one thread delivers events one at a time.
"""
from __future__ import annotations

import ctypes
import os
import queue
import sqlite3
import threading
from pathlib import Path

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from neonize.client import NewClient
from neonize.events import EVENT_TO_INT
from neonize.proto import Neonize_pb2 as nz
from neonize.proto.waCommon.WACommon_pb2 import MessageKey
from neonize.proto.waE2E import WAWebProtobufsE2E_pb2 as e2e

from bridge.transports.neonize_session import linked_devices
from tests.conftest import GROUP_A, GROUP_B, PACE_OFF

PHONE = "27710000000"

NEONIZE_CONFIG = f"""
data_dir = "data"

[accounts.main]
transport = "neonize"
phone = "{PHONE}"
api_port = 0
watchdog_sec = 3.0
follow_groups = ["{GROUP_A}", "{GROUP_B}"]
{PACE_OFF}

[[projects]]
name = "lawley"
groups = ["{GROUP_A}"]
"""


def link_session(database: Path, phone: str = PHONE, push_name: str = "Fibre Ops, Main") -> None:
    """Store a linked device for `phone` as pairing would: neonize creates the schema, we add the device row.

    The keys are random (only WhatsApp's servers could tell); the push name has a comma on purpose.
    """
    database.parent.mkdir(parents=True, exist_ok=True)
    linked_devices(str(database))  # neonize's Go code creates/upgrades the whatsmeow schema
    with sqlite3.connect(database) as conn:
        conn.execute(
            "INSERT INTO whatsmeow_device (jid, registration_id, noise_key, identity_key, signed_pre_key, "
            "signed_pre_key_id, signed_pre_key_sig, adv_key, adv_details, adv_account_sig, adv_account_sig_key, "
            "adv_device_sig, push_name) VALUES (?, 4242, ?, ?, ?, 1, ?, ?, x'', ?, ?, ?, ?)",
            (f"{phone}:7@s.whatsapp.net", os.urandom(32), os.urandom(32), os.urandom(32), os.urandom(64),
             os.urandom(32), os.urandom(64), os.urandom(32), os.urandom(64), push_name))


def go_filled(message: Message) -> Message:
    """A copy with every unset proto2 `required` field at its zero value, as neonize's Go encoder sends them
    (it sets every field; neonize's Python side refuses to parse an event that lacks one)."""
    filled = type(message)()
    filled.CopyFrom(message)
    _fill(filled)
    return filled


def _fill(message: Message) -> None:
    for field in message.DESCRIPTOR.fields:
        if field.is_repeated:
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                for item in getattr(message, field.name):
                    _fill(item)
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.is_required or message.HasField(field.name):
                child = getattr(message, field.name)
                child.SetInParent()
                _fill(child)
        elif field.is_required and not message.HasField(field.name):
            setattr(message, field.name, field.default_value)


def _reply(message: Message) -> bytes:
    return go_filled(message).SerializeToString()


_STOP = object()


class FakeGo:
    """neonize's Go library as seen from Python, with WhatsApp's servers replaced by this object."""

    def __init__(self) -> None:
        self.connects = 0
        self.fail_connect = ""  # non-empty: Neonize() returns this error (no network)
        self.subscribed: set[int] = set()
        self.sent: list[tuple[nz.JID, e2e.Message]] = []
        self.uploads: list[tuple[bytes, int]] = []
        self.downloads: list[e2e.Message] = []
        self.group_participants: list[nz.GroupParticipant] = []
        self.joined_groups: list[nz.GroupInfo] = []  # the number's groups, as WhatsApp lists them
        self.joined_error = ""
        self.lids: dict[str, str] = {}
        self.send_error = ""
        self.own_user = PHONE  # the linked account's number (BuildReaction's fromMe)
        self.reads: list[tuple[list[str], int, nz.JID, nz.JID, int]] = []
        self.presences: list[tuple[nz.JID, int, int]] = []
        self.presence_error = ""  # non-empty: MarkRead / SendChatPresence fail with it
        self.qr_codes: list[bytes] = []  # shown before any event, as for an unpaired session
        self.pair_requests: list[nz.PairPhoneParams] = []
        self.running = threading.Event()
        self._events: queue.Queue = queue.Queue()

    # -- called by neonize's Python code ---------------------------------------------------------

    def Neonize(self, name, uuid, jid, jid_size, new_device, level, qr_cb, login_cb, event_cb, log_cb,  # noqa: N802
                subscribers, subscriber_count, props, props_size, pair, pair_size, proxy):
        self.connects += 1
        self.subscribed = set(bytes(subscribers)[:subscriber_count])
        if self.fail_connect:
            return self.fail_connect.encode()
        for code in self.qr_codes:
            text = ctypes.create_string_buffer(code)
            qr_cb(uuid, ctypes.addressof(text))
        self.running.set()
        try:
            while True:  # Go's CallbackFunction: one event at a time, until Stop
                item = self._events.get()
                if item is _STOP:
                    return b""
                code, data, delivered = item
                buffer = ctypes.create_string_buffer(data, max(len(data), 1))
                event_cb(uuid, ctypes.addressof(buffer), len(data), code)
                delivered.set()
        finally:
            self.running.clear()

    def Stop(self, uuid):  # noqa: N802
        self._events.put(_STOP)
        return b""

    def SendMessage(self, uuid, to, to_size, message, message_size):  # noqa: N802
        if self.send_error:
            return _reply(nz.SendMessageReturnFunction(Error=self.send_error))
        self.sent.append((nz.JID.FromString(to[:to_size]), e2e.Message.FromString(message[:message_size])))
        response = nz.SendResponse(ID=f"3EB0{len(self.sent):08X}", Timestamp=1795991487)
        return _reply(nz.SendMessageReturnFunction(SendResponse=response))

    def BuildReaction(self, uuid, chat, chat_size, sender, sender_size, message_id, reaction):  # noqa: N802
        """whatsmeow's BuildReaction: the reacted message's key (fromMe when we sent it, the participant in a
        group) and the emoji."""
        chat_jid, sender_jid = nz.JID.FromString(chat[:chat_size]), nz.JID.FromString(sender[:sender_size])
        from_me = sender_jid.User == self.own_user
        key = MessageKey(remoteJID=f"{chat_jid.User}@{chat_jid.Server}", fromMe=from_me, ID=message_id.decode(),
                         participant=None if from_me or chat_jid.Server != "g.us" else
                         f"{sender_jid.User}@{sender_jid.Server}")
        return _reply(nz.BuildMessageReturnFunction(Message=e2e.Message(reactionMessage=e2e.ReactionMessage(
            key=key, text=reaction.decode(), senderTimestampMS=1795991487000))))

    def MarkRead(self, uuid, ids, timestamp, chat, chat_size, sender, sender_size, receipt):  # noqa: N802
        self.reads.append((ids.decode().split(" "), timestamp, nz.JID.FromString(chat[:chat_size]),
                           nz.JID.FromString(sender[:sender_size]), receipt))
        return self.presence_error.encode()

    def SendChatPresence(self, uuid, jid, size, state, media):  # noqa: N802
        self.presences.append((nz.JID.FromString(jid[:size]), state, media))
        return self.presence_error.encode()

    def Upload(self, uuid, data, size, media_type):  # noqa: N802
        self.uploads.append((bytes(data[:size]), media_type))
        return _reply(nz.UploadReturnFunction(UploadResponse=nz.UploadResponse(
            url="https://mmg.whatsapp.net/up.enc", DirectPath="/v/up.enc", MediaKey=b"m" * 32,
            FileEncSHA256=b"e" * 32, FileSHA256=b"s" * 32, FileLength=size)))

    def DownloadAny(self, uuid, message, size):  # noqa: N802
        self.downloads.append(e2e.Message.FromString(message[:size]))
        return _reply(nz.DownloadReturnFunction(Binary=b"\xff\xd8 decrypted jpeg"))

    def GetGroupInfo(self, uuid, jid, size):  # noqa: N802
        return _reply(nz.GetGroupInfoReturnFunction(GroupInfo=nz.GroupInfo(
            JID=nz.JID.FromString(jid[:size]), Participants=self.group_participants)))

    def GetJoinedGroups(self, uuid):  # noqa: N802
        return _reply(nz.GetJoinedGroupsReturnFunction(Group=self.joined_groups, Error=self.joined_error))

    def GetLIDFromPN(self, uuid, jid, size):  # noqa: N802
        number = nz.JID.FromString(jid[:size]).User
        lid = self.lids.get(number, "")
        return _reply(nz.GetJIDFromStoreReturnFunction(
            Jid=nz.JID(User=lid, Server="lid" if lid else "", IsEmpty=not lid)))

    def PairPhone(self, uuid, params, size):  # noqa: N802
        self.pair_requests.append(nz.PairPhoneParams.FromString(params[:size]))
        return _reply(nz.PairPhoneReturnFunction(Code="ABCDEFGH"))

    # -- called by tests (WhatsApp's side) --------------------------------------------------------

    def emit(self, event: Message, wait: float | None = 10.0) -> threading.Event:
        """Deliver one event through neonize's callback; waits (by default) until the callback returned."""
        delivered = threading.Event()
        self._events.put((EVENT_TO_INT[type(event)], _reply(event), delivered))
        if wait is not None and not delivered.wait(wait):
            raise AssertionError(f"{type(event).__name__} not delivered within {wait}s")
        return delivered


def talking_to(fake: FakeGo, client: NewClient) -> NewClient:
    client._NewClient__client = fake  # the Go library handle that NewClient calls into
    return client


def client_factory(fake: FakeGo):
    """A NeonizeTransport client factory: neonize's real NewClient, talking to `fake` instead of Go."""
    return lambda database, device: talking_to(fake, NewClient(database, jid=device))
