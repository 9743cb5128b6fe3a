"""neonize protobuf objects -> the transport interface -> the real store, and the messages we hand to neonize.

Every object here is a real `neonize.proto` message of neonize 0.5.2, built the
way its Go side fills them (MessageInfo.Timestamp in milliseconds, WebMessageInfo
in seconds); nothing touches the network.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from neonize.proto import Neonize_pb2 as nz
from neonize.proto.waCommon.WACommon_pb2 import MessageKey
from neonize.proto.waE2E import WAWebProtobufsE2E_pb2 as e2e
from neonize.proto.waHistorySync import WAWebProtobufsHistorySync_pb2 as history
from neonize.proto.waWeb.WAWebProtobufsWeb_pb2 import WebMessageInfo

from bridge.schema import format_ts, messages_after

from bridge.store import Store
from bridge.transport import ConnectionKind, MediaInfo, Source
from bridge.transports import neonize_mapping as mapping
from tests.conftest import GROUP_A
from tests.neonize_support import go_filled

AT = datetime(2026, 11, 24, 22, 31, 27, tzinfo=timezone.utc)
AT_MS = int(AT.timestamp() * 1000)
OWN = "27710000000@s.whatsapp.net"
SENDER = "27710000001@s.whatsapp.net"
MEDIA = dict(URL="https://mmg.whatsapp.net/v/t62.7118-24/1.enc", directPath="/v/t62.7118-24/1.enc?ccb=11-4",
             mediaKey=b"k" * 32, fileSHA256=b"s" * 32, fileEncSHA256=b"e" * 32, fileLength=4096)


def jid(text: str, device: int = 0) -> nz.JID:
    user, _, server = text.partition("@")
    return nz.JID(User=user, Server=server, Device=device, RawAgent=0, Integrator=0, IsEmpty=False)


def event(message: e2e.Message, msg_id: str = "3EB0A1", chat: str = GROUP_A, sender: str = SENDER,
          sender_alt: str = "", from_me: bool = False, pushname: str = "Sipho", ms: int = AT_MS) -> nz.Message:
    source = nz.MessageSource(Chat=jid(chat), Sender=jid(sender, device=7), IsFromMe=from_me,
                              IsGroup=chat.endswith("@g.us"),
                              AddressingMode=nz.AddressingMode.LID if sender_alt else nz.AddressingMode.PN)
    if sender_alt:
        source.SenderAlt.CopyFrom(jid(sender_alt))
    return nz.Message(Info=nz.MessageInfo(MessageSource=source, ID=msg_id, Timestamp=ms, Pushname=pushname),
                      Message=message)


KINDS = {
    "conversation": (e2e.Message(conversation="DR1734150 done"), "DR1734150 done", None),
    "extended": (e2e.Message(extendedTextMessage=e2e.ExtendedTextMessage(text="DR1734151 see https://x.y")),
                 "DR1734151 see https://x.y", None),
    "image": (e2e.Message(imageMessage=e2e.ImageMessage(caption="DR1734152 pole", mimetype="image/jpeg", **MEDIA)),
              "DR1734152 pole", ("image", "image_20261124_223127.jpg", "image/jpeg")),
    "document": (e2e.Message(documentMessage=e2e.DocumentMessage(fileName="as-built.pdf", mimetype="application/pdf",
                                                                 **MEDIA)),
                 "", ("document", "as-built.pdf", "application/pdf")),
    "video": (e2e.Message(videoMessage=e2e.VideoMessage(caption="DR1734153 trench", mimetype="video/mp4", **MEDIA)),
              "DR1734153 trench", ("video", "video_20261124_223127.mp4", "video/mp4")),
    "audio": (e2e.Message(audioMessage=e2e.AudioMessage(mimetype="audio/ogg; codecs=opus", PTT=True, **MEDIA)),
              "", ("audio", "audio_20261124_223127.oga", "audio/ogg; codecs=opus")),
}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "messages.db")
    yield s
    s.close()


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_message_kind_reaches_the_store_with_its_fields(kind: str, store: Store) -> None:
    proto, text, media = KINDS[kind]
    incoming = mapping.incoming_message(event(proto, msg_id=f"ID-{kind}"), Source.LIVE)
    assert incoming is not None
    assert (incoming.chat_jid, incoming.sender_jid, incoming.text, incoming.timestamp) == (GROUP_A, SENDER, text, AT)
    assert incoming.source == Source.LIVE and not incoming.is_from_me

    assert store.add_messages([incoming]) == 1
    (row,) = messages_after(store.conn, 0)
    assert (row.id, row.chat_jid, row.sender, row.content, row.timestamp, row.source) == (
        f"ID-{kind}", GROUP_A, "27710000001", text, format_ts(AT), "live")
    stored_media = store.media_of(f"ID-{kind}", GROUP_A)
    if media is None:
        assert row.media_type in (None, "") and not stored_media.media_type
        return
    media_type, filename, mimetype = media
    assert row.media_type == media_type
    assert stored_media == MediaInfo(media_type, filename, MEDIA["URL"], MEDIA["mediaKey"], MEDIA["fileSHA256"],
                                     MEDIA["fileEncSHA256"], MEDIA["fileLength"],
                                     {"direct_path": MEDIA["directPath"], "mimetype": mimetype})
    # /api/download: what the store kept rebuilds the message whatsmeow downloads from.
    rebuilt = mapping.download_message(stored_media)
    original = getattr(proto, f"{media_type}Message")
    again = getattr(rebuilt, f"{media_type}Message")
    for field in ("URL", "directPath", "mediaKey", "fileSHA256", "fileEncSHA256", "fileLength", "mimetype"):
        assert getattr(again, field) == getattr(original, field), field


def test_lid_sender_is_stored_as_the_phone_number_and_device_is_dropped() -> None:
    incoming = mapping.incoming_message(event(e2e.Message(conversation="DR1"), sender="123456789012345@lid",
                                              sender_alt="27710000009@s.whatsapp.net"), Source.LIVE)
    assert incoming.sender_jid == "27710000009@s.whatsapp.net"


def test_wrapped_and_empty_messages() -> None:
    wrapped = e2e.Message(ephemeralMessage=e2e.FutureProofMessage(message=e2e.Message(
        documentWithCaptionMessage=e2e.FutureProofMessage(message=e2e.Message(
            documentMessage=e2e.DocumentMessage(caption="DR2 in a doc", fileName="a.pdf", **MEDIA))))))
    incoming = mapping.incoming_message(event(wrapped), Source.OFFLINE)
    assert (incoming.text, incoming.media.media_type, incoming.source) == ("DR2 in a doc", "document", Source.OFFLINE)
    reaction = e2e.Message(reactionMessage=e2e.ReactionMessage(text="👍"))
    assert mapping.incoming_message(event(reaction), Source.LIVE) is None


def test_direct_chat_gets_the_push_name_and_own_messages_are_from_me() -> None:
    direct = mapping.incoming_message(event(e2e.Message(conversation="hi"), chat=SENDER), Source.LIVE)
    assert (direct.chat_jid, direct.chat_name) == (SENDER, "Sipho")
    mine = mapping.incoming_message(event(e2e.Message(conversation="ok"), sender=OWN, from_me=True), Source.LIVE)
    assert mine.is_from_me and mine.chat_name is None


def test_timestamps_in_seconds_or_milliseconds_give_the_same_time() -> None:
    assert mapping.from_unix(AT_MS) == mapping.from_unix(AT_MS // 1000) == AT


def test_history_sync_batch_is_stored_as_history(store: Store) -> None:
    def web(msg_id: str, message: e2e.Message, participant: str = "", from_me: bool = False) -> history.HistorySyncMsg:
        return history.HistorySyncMsg(message=WebMessageInfo(
            key=MessageKey(remoteJID=GROUP_A, fromMe=from_me, ID=msg_id), participant=participant,
            messageTimestamp=int(AT.timestamp()), message=message))
    sync = history.HistorySync(
        syncType=history.HistorySync.RECENT,
        conversations=[history.Conversation(ID=GROUP_A, name="Lawley Fibre", messages=[
            web("H1", e2e.Message(conversation="DR1734160"), participant="27710000001:3@s.whatsapp.net"),
            web("H2", e2e.Message(imageMessage=e2e.ImageMessage(caption="DR1734161", mimetype="image/jpeg", **MEDIA)),
                participant="98765@lid"),
            web("H3", e2e.Message(conversation="feedback"), from_me=True),
            web("H4", e2e.Message(protocolMessage=e2e.ProtocolMessage(type=e2e.ProtocolMessage.REVOKE))),
        ])],
        phoneNumberToLidMappings=[history.PhoneNumberToLIDMapping(pnJID="27710000002@s.whatsapp.net",
                                                                   lidJID="98765@lid")])
    messages, poison = mapping.history_messages(sync, OWN)
    assert poison == []
    assert [(m.id, m.sender_jid, m.text, m.is_from_me) for m in messages] == [
        ("H1", SENDER, "DR1734160", False), ("H2", "27710000002@s.whatsapp.net", "DR1734161", False),
        ("H3", OWN, "feedback", True)]
    assert all(m.source == Source.HISTORY and m.timestamp == AT and m.chat_name == "Lawley Fibre" for m in messages)
    assert store.add_messages(messages) == 3
    assert [(r.id, r.source) for r in messages_after(store.conn, 0)] == [("H1", "history"), ("H2", "history"),
                                                                        ("H3", "history")]


def test_poison_protobufs_are_sanitised_or_set_aside_and_the_rest_is_stored(store: Store) -> None:
    """Invalid UTF-8 in a proto2 string field reaches Python as bytes; an impossible timestamp cannot be mapped."""
    bad_text = e2e.Message.FromString(e2e.Message(conversation="DR1734180 ok").SerializeToString()
                                      .replace(b"ok", b"o\xff"))
    incoming = mapping.incoming_message(event(bad_text, msg_id="P1"), Source.LIVE)
    assert incoming is not None and incoming.text == b"DR1734180 o\xff"  # what neonize hands us
    good = mapping.incoming_message(event(e2e.Message(conversation="DR1734181"), msg_id="P2"), Source.LIVE)
    assert store.add_messages([incoming, good]) == 2
    assert [(r.id, r.content) for r in messages_after(store.conn, 0)] == [("P1", "DR1734180 o\ufffd"),
                                                                        ("P2", "DR1734181")]
    assert store.quarantine_counts() == {"sanitised": 1, "quarantined": 0}

    def web(msg_id: str, seconds: int) -> history.HistorySyncMsg:
        return history.HistorySyncMsg(message=WebMessageInfo(
            key=MessageKey(remoteJID=GROUP_A, ID=msg_id), participant=SENDER, messageTimestamp=seconds,
            message=e2e.Message(conversation=f"{msg_id} DR1734182")))
    sync = history.HistorySync(syncType=history.HistorySync.RECENT, conversations=[history.Conversation(
        ID=GROUP_A, messages=[web("H1", int(AT.timestamp())), web("H2", 2**62), web("H3", int(AT.timestamp()))])])
    messages, poison = mapping.history_messages(sync, OWN)
    assert [m.id for m in messages] == ["H1", "H3"]
    ((item, chat, error),) = poison
    assert item.message.key.ID == "H2" and chat == GROUP_A and isinstance(error, (ValueError, OverflowError, OSError))


@pytest.mark.parametrize("proto, kind, reason", [
    (nz.Connected(status=True), ConnectionKind.CONNECTED, ""),
    (nz.Disconnected(status=True), ConnectionKind.DISCONNECTED, "connection to WhatsApp closed"),
    (nz.KeepAliveTimeout(ErrorCount=2, LastSuccess=int(AT.timestamp())), ConnectionKind.DISCONNECTED,
     "keep-alive timeout (2 unanswered, last answer 2026-11-24T22:31:27+00:00)"),
    (nz.KeepAliveRestored(), ConnectionKind.CONNECTED, "keep-alive restored"),
    (nz.OfflineSyncCompleted(Count=12), ConnectionKind.OFFLINE_SYNC_DONE, "12 offline events replayed"),
    (nz.StreamReplaced(), ConnectionKind.STREAM_REPLACED, "stream replaced"),
    (nz.LoggedOut(OnConnect=True, Reason=nz.ConnectFailureReason.LOGGED_OUT), ConnectionKind.LOGGED_OUT,
     "logged out by WhatsApp on connect (LOGGED_OUT)"),
    (nz.TemporaryBan(Code=nz.TemporaryBan.SENT_TOO_MANY_SAME_MESSAGE, Expire=3600), ConnectionKind.TEMPORARY_BAN,
     "temporary ban by WhatsApp (SENT_TOO_MANY_SAME_MESSAGE) until 2026-11-24T23:31:27+00:00 (in 3600 s)"),
    (nz.ClientOutdated(), ConnectionKind.CLIENT_OUTDATED, "client outdated"),
    (nz.ConnectFailure(Reason=nz.ConnectFailureReason.INTERNAL_SERVER_ERROR, Message="try later"),
     ConnectionKind.CONNECT_FAILED, "WhatsApp refused the login (INTERNAL_SERVER_ERROR): try later"),
    (nz.StreamError(Code="516"), ConnectionKind.DISCONNECTED, "stream error 516"),
])
def test_connection_events(proto: object, kind: ConnectionKind, reason: str) -> None:
    mapped = mapping.connection_event(proto, AT)
    assert mapped.kind == kind and mapped.at == AT
    assert reason in mapped.reason


def test_a_keepalive_timeout_is_dated_at_the_last_answer_not_when_it_was_noticed() -> None:
    noticed = AT + timedelta(seconds=25)
    mapped = mapping.connection_event(nz.KeepAliveTimeout(ErrorCount=2, LastSuccess=int(AT.timestamp())), noticed)
    assert mapped.at == AT.replace(microsecond=0)


def test_text_and_mentions_as_whatsapp_expects() -> None:
    assert mapping.text_message("DR1 received") == e2e.Message(conversation="DR1 received")
    mentioned = mapping.text_message("@27710000001 DR1734150 received", [SENDER, "27710000002@s.whatsapp.net"])
    assert mentioned == e2e.Message(extendedTextMessage=e2e.ExtendedTextMessage(
        text="@27710000002 @27710000001 DR1734150 received",
        contextInfo=e2e.ContextInfo(mentionedJID=[SENDER, "27710000002@s.whatsapp.net"])))


def test_mentions_in_a_lid_group_use_the_lid_in_text_and_jid() -> None:
    text, jids = mapping.with_lids("@27710000001 DR1 and @27710000002", [SENDER, "27710000002@s.whatsapp.net"],
                                   {SENDER: "111222333@lid"})
    assert (text, jids) == ("@111222333 DR1 and @27710000002", ["111222333@lid", "27710000002@s.whatsapp.net"])


@pytest.mark.parametrize("media_type, filename, field, mimetype", [
    ("image", "pole.jpg", "imageMessage", "image/jpeg"), ("video", "trench.mp4", "videoMessage", "video/mp4"),
    ("audio", "note.ogg", "audioMessage", "audio/ogg; codecs=opus"),
    ("document", "as-built.pdf", "documentMessage", "application/pdf")])
def test_media_message_carries_the_upload_and_caption(media_type: str, filename: str, field: str,
                                                       mimetype: str) -> None:
    upload = nz.UploadResponse(url=MEDIA["URL"], DirectPath=MEDIA["directPath"], MediaKey=MEDIA["mediaKey"],
                               FileEncSHA256=MEDIA["fileEncSHA256"], FileSHA256=MEDIA["fileSHA256"], FileLength=4096)
    message = mapping.media_message(media_type, upload, filename, "DR1 photo", [SENDER])
    assert [f.name for f, _ in message.ListFields()] == [field]
    media = getattr(message, field)
    assert (media.URL, media.directPath, media.mediaKey, media.fileLength, media.mimetype) == (
        MEDIA["URL"], MEDIA["directPath"], MEDIA["mediaKey"], 4096, mimetype)
    assert list(media.contextInfo.mentionedJID) == [SENDER]
    if media_type == "audio":
        assert media.PTT  # WhatsApp has no audio caption; an .ogg goes as a voice note
    else:
        assert media.caption == "@27710000001 DR1 photo"
    if media_type == "document":
        assert media.fileName == filename


def test_joined_groups_are_the_group_jids_of_neonize_group_infos() -> None:
    """client.get_joined_groups() answers GroupInfo messages; the store's chat JIDs are `user@g.us`."""
    groups = [nz.GroupInfo(JID=jid("120363000000000002@g.us"), GroupName=nz.GroupName(Name="Mohadin Fibre"),
                           Participants=[nz.GroupParticipant(JID=jid(OWN), IsAdmin=True)]),
              nz.GroupInfo(JID=jid(GROUP_A), GroupName=nz.GroupName(Name="Lawley Fibre")),
              nz.GroupInfo(JID=jid("status@broadcast"))]  # not a group chat
    wire = nz.GetJoinedGroupsReturnFunction.FromString(
        go_filled(nz.GetJoinedGroupsReturnFunction(Group=groups)).SerializeToString())
    assert mapping.group_jids(wire.Group) == [GROUP_A, "120363000000000002@g.us"]
