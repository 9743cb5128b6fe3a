"""The neonize transport driven through neonize's own Python client, with only the Go/network side replaced.

Events enter through neonize's real ctypes callback as protobuf bytes and drive
a real Bridge (store, disconnect windows, health); sends are checked as the
serialized waE2E.Message neonize hands to its Go library. The real Go library
without network is exercised by tests/bridge/test_neonize_processes.py.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from neonize.proto import Neonize_pb2 as nz
from neonize.utils.enum import ChatPresence, ChatPresenceMedia, ReceiptType
from neonize.proto.waCommon.WACommon_pb2 import MessageKey
from neonize.proto.waE2E import WAWebProtobufsE2E_pb2 as e2e
from neonize.proto.waHistorySync import WAWebProtobufsHistorySync_pb2 as history
from neonize.proto.waWeb.WAWebProtobufsWeb_pb2 import WebMessageInfo

from bridge.main import Bridge
from bridge.schema import messages_after, windows
from bridge.store import Store
from bridge.transport import (AnswerLost, ConnectionEvent, ConnectionKind, HistoryUnsupported, IncomingMessage,
                              MediaInfo, NotConnected, OutgoingMedia, OutgoingMessage, Quote, RateLimited, Reaction,
                              Receipt, SendFailed, Source)
from bridge.transports.neonize_account import session_database
from bridge.transports.neonize_requests import HISTORY_LIMIT
from bridge.transports.neonize_session import NeedsOperator, ensure_paired
from bridge.transports.neonize_transport import NeonizeTransport
from tests.conftest import GROUP_A, GROUP_B, until
from tests.neonize_support import NEONIZE_CONFIG, PHONE, FakeGo, client_factory, link_session
from watchdog.components import Config, load
from watchdog.shared.exitcodes import EXIT_NEEDS_OPERATOR

SENDER = "27710000001@s.whatsapp.net"
NOW_MS = int(datetime(2026, 11, 24, 22, 31, 27, tzinfo=timezone.utc).timestamp() * 1000)


def jid(text: str) -> nz.JID:
    user, _, server = text.partition("@")
    return nz.JID(User=user, Server=server, Device=0, RawAgent=0, Integrator=0, IsEmpty=False)


def group_message(msg_id: str, text: str, lid_addressed: bool = False) -> nz.Message:
    source = nz.MessageSource(Chat=jid(GROUP_A), Sender=jid(SENDER), IsGroup=True,
                              AddressingMode=nz.AddressingMode.LID if lid_addressed else nz.AddressingMode.PN)
    return nz.Message(Info=nz.MessageInfo(MessageSource=source, ID=msg_id, Timestamp=NOW_MS),
                      Message=e2e.Message(conversation=text))


@pytest.fixture
def config(write_config) -> Config:
    return load(write_config(NEONIZE_CONFIG))


@pytest.fixture
def linked(config: Config) -> Config:
    link_session(Path(session_database(config.account("main"))))
    return config


class Recorder:
    """A Handler that records; `gate` (when set) holds on_messages until released, like a slow commit."""

    def __init__(self) -> None:
        self.messages: list[IncomingMessage] = []
        self.events: list[ConnectionEvent] = []
        self.receipts: list[Receipt] = []
        self.gate: asyncio.Event | None = None

    async def on_messages(self, messages: list[IncomingMessage]) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.messages.extend(messages)

    async def on_connection(self, event: ConnectionEvent) -> None:
        self.events.append(event)

    async def on_receipts(self, receipts: list[Receipt]) -> None:
        self.receipts.extend(receipts)


@contextlib.asynccontextmanager
async def running(transport: NeonizeTransport, handler, fake: FakeGo) -> AsyncIterator[asyncio.Task]:
    """transport.run() as a task, connected to `fake`; closed and awaited whatever the test did."""
    task = asyncio.create_task(transport.run(handler))
    try:
        await until(lambda: fake.running.is_set() or task.done(), message="neonize to connect")
        yield task
    finally:
        await transport.close()
        await asyncio.wait_for(task, 5)


async def emit(fake: FakeGo, *events: object) -> None:
    for event in events:
        await asyncio.to_thread(fake.emit, event)


def test_events_drive_the_bridge_store_windows_and_health(linked: Config) -> None:
    account = linked.account("main")
    fake = FakeGo()

    async def scenario() -> None:
        store = Store(account.store)
        transport = NeonizeTransport(linked, account, client_factory(fake))
        bridge = Bridge(linked, account, store, transport)
        try:
            async with running(transport, bridge, fake) as task:
                await bridge_scenario(fake, store, bridge, task)
        finally:
            for pending in list(bridge._tasks):
                pending.cancel()
            store.close()

    asyncio.run(scenario())


async def bridge_scenario(fake: FakeGo, store: Store, bridge: Bridge, task: asyncio.Task) -> None:
    # neonize subscribes in Go exactly to what the transport registered: messages, history, connection events.
    assert {17, 13, 3, 12, 4, 5, 27, 7, 6, 8, 10, 9, 11} <= fake.subscribed

    await emit(fake, nz.Connected(status=True), group_message("M1", "DR1734150 offline"),
               nz.OfflineSyncCompleted(Count=1), group_message("M2", "DR1734151 live"))
    assert bridge.health.state == "connected"
    assert [(r.id, r.source) for r in messages_after(store.conn, 0)] == [("M1", "offline"), ("M2", "live")]

    await emit(fake, nz.Disconnected(status=True))
    assert bridge.health.snapshot(bridge.health_inputs())[0] == 503
    assert store.open_window().reason.startswith("connection to WhatsApp closed")
    await emit(fake, nz.Connected(status=True))
    # Connected, but WhatsApp's offline queue is not replayed yet: the window stays open, not caught up.
    assert store.open_window() is not None
    assert bridge.health.snapshot(bridge.health_inputs())[1]["caught_up"] is False
    await emit(fake, nz.OfflineSyncCompleted(Count=0))
    await until(lambda: store.open_window() is None, message="the window to close after the offline sync")
    (window,) = await until(lambda: [w for w in windows(store.conn) if w.backfill_status == "unsupported"],
                            message="the window to be marked unsupported (no history requests on neonize)")
    assert window.reason.startswith("connection to WhatsApp closed") and window.ended_at

    # Keep-alive: one report per outage; restored on the same socket = connected and caught up.
    await emit(fake, nz.KeepAliveTimeout(ErrorCount=1, LastSuccess=NOW_MS // 1000),
               nz.KeepAliveTimeout(ErrorCount=2, LastSuccess=NOW_MS // 1000))
    assert bridge.health.state == "disconnected" and "keep-alive timeout (1 unanswered" in bridge.health.reason
    await emit(fake, nz.KeepAliveRestored())
    assert bridge.health.state == "connected"
    await bridge.transport.send(OutgoingMessage("after-restore", SENDER, "DR1734150 ok"))
    assert fake.sent[-1][1] == e2e.Message(conversation="DR1734150 ok")

    await emit(fake, nz.StreamReplaced())
    await asyncio.wait_for(task, 5)  # terminal: run() returns, the client was stopped, no reconnect
    assert bridge.health.state == "stream_replaced" and not fake.running.is_set() and fake.connects == 1
    kinds = [kind for _, kind, _ in store.connection_events()]
    assert kinds == ["connected", "offline_sync_done", "disconnected", "connected", "offline_sync_done",
                     "disconnected", "connected", "offline_sync_done", "stream_replaced"]


@pytest.mark.parametrize("terminal, kind", [
    (nz.LoggedOut(OnConnect=False, Reason=nz.ConnectFailureReason.LOGGED_OUT), ConnectionKind.LOGGED_OUT),
    (nz.ClientOutdated(), ConnectionKind.CLIENT_OUTDATED)])
def test_terminal_events_stop_without_reconnecting(linked: Config, terminal: object, kind: ConnectionKind) -> None:
    fake, recorder = FakeGo(), Recorder()

    async def scenario() -> None:
        transport = NeonizeTransport(linked, linked.account("main"), client_factory(fake))
        async with running(transport, recorder, fake) as task:
            await emit(fake, nz.Connected(status=True), terminal)
            await asyncio.wait_for(task, 5)
        assert [e.kind for e in recorder.events] == [ConnectionKind.CONNECTED, kind] and fake.connects == 1

    asyncio.run(scenario())


def test_a_temporary_ban_stops_the_session_until_it_expires_then_connects_again(linked: Config) -> None:
    """whatsmeow's TemporaryBan (code, Expire in seconds): the client stops, a new session starts at the expiry."""
    fake, recorder = FakeGo(), Recorder()

    async def scenario() -> None:
        transport = NeonizeTransport(linked, linked.account("main"), client_factory(fake))
        async with running(transport, recorder, fake):
            await emit(fake, nz.Connected(status=True), nz.TemporaryBan(Code=nz.TemporaryBan.BLOCKED_BY_USERS,
                                                                         Expire=2))
            await until(lambda: not fake.running.is_set(), message="the banned session to stop")
            banned = recorder.events[-1]
            assert banned.kind == ConnectionKind.TEMPORARY_BAN and "BLOCKED_BY_USERS" in banned.reason
            assert banned.until is not None and 1.5 <= (banned.until - banned.at).total_seconds() <= 2.5
            with pytest.raises(NotConnected):
                await transport.send(OutgoingMessage("x", SENDER, "hi"))
            assert fake.connects == 1  # nothing before the expiry
            await until(lambda: fake.connects == 2 and fake.running.is_set(), timeout=10,
                        message="a new session at the expiry")

    asyncio.run(scenario())


@pytest.mark.parametrize("error, raised, reason", [
    ("server returned error 429", RateLimited, "rate-overlimit (429)"),
    ("failed to refresh media connections: info query returned 429: rate-overlimit", RateLimited, "rate-overlimit"),
    ("server returned error 463", SendFailed, "error 463: refused for this contact: WhatsApp's reach-out time-lock"),
    ("server returned error 479", SendFailed, "error 479: refused for this contact"),
    ("server returned error 403", SendFailed, "error 403: forbidden"),
    ("server returned error 500", SendFailed, "error 500: refused by WhatsApp"),
    ("failed to send message: websocket not connected", NotConnected, "websocket not connected"),
    ("failed to get device list: info query timed out", NotConnected, "info query timed out"),
    ("websocket disconnected before message send returned response", AnswerLost, "before message send returned"),
    ("timed out waiting for message send response", AnswerLost, "timed out waiting for message send response")])
def test_whatsapps_send_errors_slow_down_fail_the_message_or_retry(linked: Config, error: str, raised: type,
                                                                     reason: str) -> None:
    """whatsmeow's words for a refused send (ErrServerReturnedError + code, IQError), through neonize's real
    SendMessageError: rate-overlimit pauses the account, a contact refusal fails the message with its meaning.
    Nothing written (not connected, a device-list query) is NotConnected; the message node written and then no
    answer (send.go's DisconnectedError for "message send", ErrMessageTimedOut) is AnswerLost: WhatsApp's id, so
    the outbox must not simply send it again."""
    fake = FakeGo()

    async def body(transport: NeonizeTransport) -> None:
        fake.send_error = error
        with pytest.raises(raised, match=re.escape(reason)) as caught:
            await transport.send(OutgoingMessage("x", SENDER, "hi"))
        assert type(caught.value) is raised

    run_connected(linked, fake, body)


@pytest.mark.slow
def test_stream_error_replaces_the_session(linked: Config) -> None:
    """whatsmeow does not reconnect after an unknown stream error; the transport starts a new session."""
    fake, recorder = FakeGo(), Recorder()

    async def scenario() -> None:
        transport = NeonizeTransport(linked, linked.account("main"), client_factory(fake))
        async with running(transport, recorder, fake):
            await emit(fake, nz.Connected(status=True), nz.StreamError(Code="516"))
            await until(lambda: fake.connects == 2 and fake.running.is_set(), message="a second session")
            await emit(fake, nz.Connected(status=True))
        assert [(e.kind, e.reason) for e in recorder.events] == [
            (ConnectionKind.CONNECTED, ""), (ConnectionKind.DISCONNECTED, "stream error 516"),
            (ConnectionKind.CONNECTED, "")]

    asyncio.run(scenario())


def test_callback_returns_only_after_the_handler_committed(linked: Config) -> None:
    """neonize's Go side waits for our callback; the callback waits for on_messages (the commit)."""
    fake, recorder = FakeGo(), Recorder()

    async def scenario() -> None:
        recorder.gate = asyncio.Event()
        transport = NeonizeTransport(linked, linked.account("main"), client_factory(fake))
        async with running(transport, recorder, fake):
            await emit(fake, nz.Connected(status=True))
            delivered = fake.emit(group_message("M9", "DR1734159"), wait=None)
            held = await asyncio.to_thread(delivered.wait, 0.3)
            assert not held and recorder.messages == []  # the Go thread is still inside our callback
            recorder.gate.set()
            assert await asyncio.to_thread(delivered.wait, 5)
            assert [m.id for m in recorder.messages] == ["M9"]

    asyncio.run(scenario())


@pytest.mark.slow
def test_a_failed_commit_is_retried_before_the_callback_returns(linked: Config) -> None:
    """WhatsApp already has its receipt: a store failure must not drop the message."""
    fake, recorder = FakeGo(), Recorder()
    failures = []

    async def flaky(messages: list[IncomingMessage]) -> None:
        if not failures:
            failures.append(messages[0].id)
            raise OSError("disk I/O error")
        recorder.messages.extend(messages)

    async def scenario() -> None:
        recorder.on_messages = flaky  # type: ignore[method-assign]
        transport = NeonizeTransport(linked, linked.account("main"), client_factory(fake))
        async with running(transport, recorder, fake):
            await emit(fake, nz.Connected(status=True), group_message("M7", "DR1734157"))
            assert failures == ["M7"] and [m.id for m in recorder.messages] == ["M7"]

    asyncio.run(scenario())


def test_history_sync_batches_reach_the_handler_as_history(linked: Config) -> None:
    fake, recorder = FakeGo(), Recorder()
    web = WebMessageInfo(key=MessageKey(remoteJID=GROUP_A, fromMe=False, ID="H1"), participant=SENDER,
                         messageTimestamp=NOW_MS // 1000, message=e2e.Message(conversation="DR1734170"))
    sync = history.HistorySync(syncType=history.HistorySync.RECENT, conversations=[
        history.Conversation(ID=GROUP_A, messages=[history.HistorySyncMsg(message=web)])])

    async def scenario() -> None:
        transport = NeonizeTransport(linked, linked.account("main"), client_factory(fake))
        async with running(transport, recorder, fake):
            await emit(fake, nz.Connected(status=True), nz.HistorySync(Data=sync))
        (message,) = recorder.messages
        assert (message.id, message.chat_jid, message.sender_jid, message.text, message.source) == (
            "H1", GROUP_A, SENDER, "DR1734170", Source.HISTORY)

    asyncio.run(scenario())


def run_connected(linked: Config, fake: FakeGo, body) -> None:
    async def scenario() -> None:
        transport = NeonizeTransport(linked, linked.account("main"), client_factory(fake))
        async with running(transport, Recorder(), fake):
            await emit(fake, nz.Connected(status=True))
            await body(transport)
    asyncio.run(scenario())


def test_send_with_mentions_is_the_extended_text_whatsapp_expects(linked: Config) -> None:
    fake = FakeGo()
    fake.group_participants = [nz.GroupParticipant(JID=jid(SENDER), PhoneNumber=jid(SENDER))]

    async def body(transport: NeonizeTransport) -> None:
        result = await transport.send(OutgoingMessage("bridge-id-1", GROUP_A, "@27710000001 DR1734150 received",
                                                      (SENDER,)))
        assert result.message_id == "3EB000000001"  # WhatsApp's id: neonize cannot send with ours
        assert result.timestamp == datetime.fromtimestamp(1795991487, timezone.utc)

    run_connected(linked, fake, body)
    ((to, message),) = fake.sent
    assert (to.User, to.Server) == ("120363000000000001", "g.us")
    assert message == e2e.Message(extendedTextMessage=e2e.ExtendedTextMessage(
        text="@27710000001 DR1734150 received", contextInfo=e2e.ContextInfo(mentionedJID=[SENDER])))


def test_a_quoted_reply_carries_whatsapps_context_info_with_the_mentions(linked: Config) -> None:
    fake = FakeGo()
    fake.group_participants = [nz.GroupParticipant(JID=jid(SENDER), PhoneNumber=jid(SENDER))]
    quote = Quote("3EB0QUOTED0001", SENDER, "DR1734150 installed")

    async def body(transport: NeonizeTransport) -> None:
        await transport.send(OutgoingMessage("id-2", GROUP_A, "@27710000001 DR1734150 approved", (SENDER,),
                                             quote=quote))

    run_connected(linked, fake, body)
    ((_, message),) = fake.sent
    assert message == e2e.Message(extendedTextMessage=e2e.ExtendedTextMessage(
        text="@27710000001 DR1734150 approved", contextInfo=e2e.ContextInfo(
            stanzaID="3EB0QUOTED0001", participant=SENDER, quotedMessage=e2e.Message(conversation="DR1734150 installed"),
            mentionedJID=[SENDER])))


@pytest.mark.parametrize("from_me, participant", [(False, SENDER), (True, None)])
def test_a_reaction_is_built_by_neonize_and_sent_to_the_chat(linked: Config, from_me: bool,
                                                            participant: str | None) -> None:
    """neonize's build_reaction (whatsmeow's BuildReaction: the reacted message's key) then send_message."""
    fake = FakeGo()

    async def body(transport: NeonizeTransport) -> None:
        await transport.send(OutgoingMessage("id-3", GROUP_A, "✅", reaction=Reaction(
            "3EB0DROP00001", "" if from_me else SENDER, from_me, "✅")))

    run_connected(linked, fake, body)
    ((to, message),) = fake.sent
    assert (to.User, to.Server) == ("120363000000000001", "g.us")
    reaction = message.reactionMessage
    assert (reaction.text, reaction.key.ID, reaction.key.remoteJID, reaction.key.fromMe) == (
        "✅", "3EB0DROP00001", GROUP_A, from_me)
    assert (reaction.key.participant or None) == participant


def test_read_receipts_and_typing_go_through_neonize(linked: Config) -> None:
    fake = FakeGo()
    at = datetime(2026, 11, 24, 22, 31, 27, tzinfo=timezone.utc)

    async def body(transport: NeonizeTransport) -> None:
        await transport.mark_read(GROUP_A, SENDER, ("M1", "M2"), at)
        await transport.typing(GROUP_A, True)
        await transport.typing(GROUP_A, False)
        fake.presence_error = "failed to send chat presence: websocket not connected"
        with pytest.raises(NotConnected):
            await transport.typing(GROUP_A, True)

    run_connected(linked, fake, body)
    ((ids, timestamp, chat, sender, receipt),) = fake.reads
    assert (ids, timestamp, chat.User, sender.User, receipt) == (["M1", "M2"], int(at.timestamp()),
                                                                 "120363000000000001", "27710000001",
                                                                 ReceiptType.READ.value)
    assert [(p[0].User, p[1], p[2]) for p in fake.presences[:2]] == [
        ("120363000000000001", ChatPresence.CHAT_PRESENCE_COMPOSING.value, ChatPresenceMedia.CHAT_PRESENCE_MEDIA_TEXT.value),
        ("120363000000000001", ChatPresence.CHAT_PRESENCE_PAUSED.value, ChatPresenceMedia.CHAT_PRESENCE_MEDIA_TEXT.value)]


def test_a_received_reply_carries_the_id_it_quotes(linked: Config) -> None:
    fake, recorder = FakeGo(), Recorder()
    source = nz.MessageSource(Chat=jid(GROUP_A), Sender=jid(SENDER), IsGroup=True)
    reply = nz.Message(Info=nz.MessageInfo(MessageSource=source, ID="M9", Timestamp=NOW_MS),
                       Message=e2e.Message(extendedTextMessage=e2e.ExtendedTextMessage(
                           text="fixed, see DR1734150", contextInfo=e2e.ContextInfo(
                               stanzaID="3EB0FEEDBACK01", participant="27710000000@s.whatsapp.net",
                               quotedMessage=e2e.Message(conversation="DR1734150 rejected")))))

    async def scenario() -> None:
        transport = NeonizeTransport(linked, linked.account("main"), client_factory(fake))
        async with running(transport, recorder, fake):
            await emit(fake, nz.Connected(status=True), reply, group_message("M10", "no reply"))

    asyncio.run(scenario())
    assert [(m.id, m.quoted_message_id) for m in recorder.messages] == [("M9", "3EB0FEEDBACK01"), ("M10", None)]


def test_mentions_in_a_lid_addressed_group_use_lids(linked: Config) -> None:
    fake = FakeGo()
    fake.lids = {"27710000001": "111222333444555"}

    async def body(transport: NeonizeTransport) -> None:
        await emit(fake, group_message("M1", "DR1734150", lid_addressed=True))  # the group speaks LID
        await transport.send(OutgoingMessage("bridge-id-2", GROUP_A, "@27710000001 DR1734150 needs correction",
                                             (SENDER,)))

    run_connected(linked, fake, body)
    ((_, message),) = fake.sent
    assert message.extendedTextMessage.text == "@111222333444555 DR1734150 needs correction"
    assert list(message.extendedTextMessage.contextInfo.mentionedJID) == ["111222333444555@lid"]


def test_lid_addressing_learned_from_group_participants(linked: Config) -> None:
    fake = FakeGo()
    fake.group_participants = [nz.GroupParticipant(JID=nz.JID(User="111222333444555", Server="lid"),
                                                   PhoneNumber=jid(SENDER))]
    fake.lids = {"27710000001": "111222333444555"}

    async def body(transport: NeonizeTransport) -> None:
        await transport.send(OutgoingMessage("bridge-id-3", GROUP_A, "DR1 ok", (SENDER,)))

    run_connected(linked, fake, body)
    assert fake.sent[0][1].extendedTextMessage.text == "@111222333444555 DR1 ok"


def test_send_media_uploads_then_sends_the_caption(linked: Config, tmp_path: Path) -> None:
    fake = FakeGo()
    photo = tmp_path / "pole.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0 jpeg bytes")

    async def body(transport: NeonizeTransport) -> None:
        await transport.send(OutgoingMessage("bridge-id-4", SENDER, "DR1734150 photo",
                                             media=OutgoingMedia(photo, "image", "pole.jpg")))

    run_connected(linked, fake, body)
    assert fake.uploads == [(photo.read_bytes(), 0)]  # MediaType.MediaImage: image encryption keys
    image = fake.sent[0][1].imageMessage
    assert (image.caption, image.URL, image.directPath, image.mimetype, image.fileLength) == (
        "DR1734150 photo", "https://mmg.whatsapp.net/up.enc", "/v/up.enc", "image/jpeg", len(photo.read_bytes()))


def test_send_errors_and_not_connected(linked: Config, config: Config) -> None:
    fake = FakeGo()

    async def body(transport: NeonizeTransport) -> None:
        fake.send_error = "failed to send message: websocket not connected"
        with pytest.raises(NotConnected):
            await transport.send(OutgoingMessage("x", SENDER, "hi"))
        fake.send_error = "server returned error 406"
        with pytest.raises(SendFailed, match="406"):
            await transport.send(OutgoingMessage("y", SENDER, "hi"))
        with pytest.raises(SendFailed, match="cannot read media"):
            await transport.send(OutgoingMessage("z", SENDER, "hi", media=OutgoingMedia(Path("/nonexistent.jpg"),
                                                                                          "image", "x.jpg")))

    run_connected(linked, fake, body)
    idle = NeonizeTransport(config, config.account("main"), client_factory(fake))
    with pytest.raises(NotConnected):
        asyncio.run(idle.send(OutgoingMessage("w", SENDER, "hi")))


def test_joined_groups_are_what_whatsapp_lists(linked: Config, config: Config) -> None:
    fake = FakeGo()
    fake.joined_groups = [nz.GroupInfo(JID=jid(GROUP_B), GroupName=nz.GroupName(Name="Mohadin Fibre")),
                          nz.GroupInfo(JID=jid(GROUP_A), GroupName=nz.GroupName(Name="Lawley Fibre"))]

    async def body(transport: NeonizeTransport) -> None:
        assert await transport.joined_groups() == [GROUP_A, GROUP_B]
        fake.joined_error = "info query timed out"
        with pytest.raises(NotConnected, match="info query timed out"):
            await transport.joined_groups()

    run_connected(linked, fake, body)
    idle = NeonizeTransport(config, config.account("main"), client_factory(fake))
    with pytest.raises(NotConnected):
        asyncio.run(idle.joined_groups())


def test_download_rebuilds_the_media_message(linked: Config) -> None:
    fake = FakeGo()
    media = MediaInfo("image", "pole.jpg", "https://mmg.whatsapp.net/x.enc", b"k" * 32, b"s" * 32, b"e" * 32, 99,
                      {"direct_path": "/v/x.enc", "mimetype": "image/jpeg"})

    async def body(transport: NeonizeTransport) -> None:
        assert await transport.download(media) == b"\xff\xd8 decrypted jpeg"

    run_connected(linked, fake, body)
    image = fake.downloads[0].imageMessage
    assert (image.URL, image.directPath, image.mediaKey, image.fileLength) == (media.url, "/v/x.enc", b"k" * 32, 99)


def test_history_requests_are_unsupported_with_the_reason(config: Config) -> None:
    transport = NeonizeTransport(config, config.account("main"))
    assert not transport.capabilities.history_request and "Peer" in transport.capabilities.history_limit
    with pytest.raises(HistoryUnsupported, match="peer message"):
        asyncio.run(transport.request_history(GROUP_A, datetime.now(timezone.utc), datetime.now(timezone.utc)))
    assert transport.capabilities.history_limit == HISTORY_LIMIT


def test_unpaired_session_needs_an_operator(config: Config) -> None:
    account = config.account("main")
    with pytest.raises(NeedsOperator, match=f"wa-watchdog pair --account main --phone {PHONE}") as caught:
        ensure_paired(account)
    assert caught.value.exit_code == EXIT_NEEDS_OPERATOR
    assert not Path(session_database(account)).exists()  # looking does not create a session store
    with pytest.raises(NeedsOperator):  # and run() refuses before connecting
        asyncio.run(NeonizeTransport(config, account, client_factory(FakeGo())).run(Recorder()))


def test_poison_messages_are_quarantined_with_their_raw_bytes_and_the_rest_is_stored(linked: Config) -> None:
    """A live message neonize decodes but we cannot map (impossible timestamp), one with invalid UTF-8 text, and a
    history batch with one bad item: the raw protobuf is kept, the good messages stored, the recovery log says so."""
    account = linked.account("main")
    fake = FakeGo()
    impossible = group_message("BAD1", "DR1734190")
    impossible.Info.Timestamp = 2**62
    bad_utf8 = nz.Message()
    bad_utf8.MergeFromString(group_message("BAD2", "DR1734191 ok").SerializePartialToString().replace(b"ok", b"o\xff"))
    web = [WebMessageInfo(key=MessageKey(remoteJID=GROUP_A, ID=msg_id), participant=SENDER, messageTimestamp=seconds,
                          message=e2e.Message(conversation=f"DR173419{n}"))
           for n, (msg_id, seconds) in enumerate([("H1", NOW_MS // 1000), ("H2", 2**62), ("H3", NOW_MS // 1000)])]
    sync = history.HistorySync(syncType=history.HistorySync.RECENT, conversations=[
        history.Conversation(ID=GROUP_A, messages=[history.HistorySyncMsg(message=m) for m in web])])

    async def scenario() -> None:
        store = Store(account.store)
        transport = NeonizeTransport(linked, account, client_factory(fake))
        bridge = Bridge(linked, account, store, transport)
        try:
            async with running(transport, bridge, fake):
                await emit(fake, nz.Connected(status=True), impossible, bad_utf8, group_message("OK1", "DR1734192"),
                           nz.HistorySync(Data=sync))
                await until(lambda: store.message_count() == 4, message="the good messages stored")
            assert [(m.id, m.content) for m in messages_after(store.conn, 0)] == [
                ("BAD2", "DR1734191 o\ufffd"), ("OK1", "DR1734192"), ("H1", "DR1734190"), ("H3", "DR1734192")]
            quarantined = store.conn.execute("SELECT message_id, action, reason, raw FROM quarantine ORDER BY id").fetchall()
            assert [(q[0], q[1]) for q in quarantined] == [("BAD1", "quarantined"), ("BAD2", "sanitised"),
                                                           ("H2", "quarantined")]
            kept = nz.Message()
            kept.MergeFromString(base64.b64decode(json.loads(quarantined[0][3])["protobuf_b64"]))
            assert (kept.Info.ID, kept.Info.Timestamp, kept.Message.conversation) == ("BAD1", 2**62, "DR1734190")
            assert store.quarantine_counts() == {"sanitised": 1, "quarantined": 2}
            events = [r for r in bridge.recovery_log.read() if r["event"] == "quarantine"]
            assert sum(r["quarantined"] + r["sanitised"] for r in events) == 3
        finally:
            for pending in list(bridge._tasks):
                pending.cancel()
            store.close()

    asyncio.run(scenario())


def test_receipts_reach_the_handler_and_our_own_devices_reads_do_not(linked: Config) -> None:
    """whatsmeow's Receipt events (real protobuf, through the fake Go side) -> Handler.on_receipts."""
    fake, recorder = FakeGo(), Recorder()

    def receipt(kind: int, from_me: bool = False) -> nz.Receipt:
        return nz.Receipt(MessageSource=nz.MessageSource(Chat=jid(GROUP_A), Sender=jid(SENDER), IsFromMe=from_me,
                                                         IsGroup=True),
                          MessageIDs=["3EB0F1"], Timestamp=NOW_MS, Type=kind)

    async def scenario() -> None:
        transport = NeonizeTransport(linked, linked.account("main"), client_factory(fake))
        async with running(transport, recorder, fake):
            assert 18 in fake.subscribed  # neonize's code for events.Receipt
            await emit(fake, nz.Connected(status=True), receipt(nz.Receipt.ReceiptType.DELIVERED),
                       receipt(nz.Receipt.ReceiptType.READ_SELF, from_me=True), receipt(nz.Receipt.ReceiptType.READ))
        assert [(r.message_ids, r.recipient_jid, r.kind.value) for r in recorder.receipts] == [
            (("3EB0F1",), SENDER, "delivered"), (("3EB0F1",), SENDER, "read")]

    asyncio.run(scenario())
