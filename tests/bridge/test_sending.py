"""Send-request parsing: recipients, mentions, bounds (plain functions); media: tests/bridge/test_media.py."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from bridge.downloads import safe_filename
from bridge.sending import (MAX_MENTIONS, MAX_TEXT, BadRequest, media_type_for, parse_jid, parse_mentions, parse_send,
                            parse_send_message, refusal_status, with_mention_tags)
from tests.conftest import GROUP_A


@pytest.mark.parametrize("raw, jid", [
    ("27710000001", "27710000001@s.whatsapp.net"),
    ("+27710000001", "27710000001@s.whatsapp.net"),
    (" 27710000001@s.whatsapp.net ", "27710000001@s.whatsapp.net"),
    ("27710000001:3@s.whatsapp.net", "27710000001@s.whatsapp.net"),
    ("27710000001@c.us", "27710000001@s.whatsapp.net"),
    ("+27 71 000 0001", "27710000001@s.whatsapp.net"),  # as people write numbers
    ("+27 (71) 000-0001", "27710000001@s.whatsapp.net"),
    ("27.71.000.0001", "27710000001@s.whatsapp.net"),
    (GROUP_A, GROUP_A),
    ("27710000001-1600000000@g.us", "27710000001-1600000000@g.us"),
])
def test_recipients_are_numbers_or_jids(raw: str, jid: str) -> None:
    assert parse_jid(raw) == jid


@pytest.mark.parametrize("raw, problem", [
    ("", "recipient is required"), (None, "recipient is required"), ("  ", "recipient is required"),
    (27710000001, "recipient must be a string"),
    ("bob", "malformed recipient 'bob'"), ("123@example.com", "malformed recipient JID"),
    ("+27 71 000 000x", "malformed recipient '\\+27 71 000 000x'"), ("27 71", "malformed recipient '27 71'"),
    ("@g.us", "malformed recipient JID"), ("12 34@g.us", "malformed recipient JID"),
])
def test_malformed_recipients_are_named(raw: object, problem: str) -> None:
    with pytest.raises(BadRequest, match=problem):
        parse_jid(raw)


def test_mentions_accept_string_or_list_of_numbers_or_jids() -> None:
    assert parse_mentions("27710000001") == ("27710000001@s.whatsapp.net",)
    assert parse_mentions(["27710000001", "27710000002@s.whatsapp.net", "27710000001"]) == (
        "27710000001@s.whatsapp.net", "27710000002@s.whatsapp.net")
    assert parse_mentions(None) == () and parse_mentions([]) == ()
    with pytest.raises(BadRequest, match="cannot mention a group"):
        parse_mentions([GROUP_A])
    with pytest.raises(BadRequest, match="mentions must be"):
        parse_mentions({"a": 1})


def test_mention_tags_are_prepended_only_when_missing() -> None:
    one, two = "27710000001@s.whatsapp.net", "27710000002@s.whatsapp.net"
    assert with_mention_tags("DR1234567 - needs correction", (one,)) == "@27710000001 DR1234567 - needs correction"
    assert with_mention_tags("thanks @27710000001!", (one,)) == "thanks @27710000001!"
    assert with_mention_tags("hi @277100000012", (one,)) == "@27710000001 hi @277100000012"  # a longer number
    assert with_mention_tags("", (one, two)) == "@27710000001 @27710000002"
    assert with_mention_tags("plain", ()) == "plain"


@pytest.mark.parametrize("name, kind", [("a.jpg", "image"), ("a.JPEG", "image"), ("a.png", "image"),
                                        ("a.gif", "image"), ("a.webp", "image"), ("a.ogg", "audio"),
                                        ("a.mp4", "video"), ("a.avi", "video"), ("a.mov", "video"),
                                        ("a.pdf", "document"), ("noext", "document")])
def test_media_type_by_extension_as_whatsapp_mcp(name: str, kind: str) -> None:
    assert media_type_for(Path(name)) == kind


def test_lists_and_text_are_bounded_and_the_work_is_linear() -> None:
    many = [str(27700000000 + n) for n in range(MAX_MENTIONS)]
    started = time.perf_counter()
    req = parse_send({"recipient": GROUP_A, "message": "x" * 50_000, "mentions": many})
    assert len(req.mentioned_jids) == MAX_MENTIONS and req.text.startswith("@27700000000 @27700000001")
    assert time.perf_counter() - started < 1.0  # quadratic work took 0.8 s for 10,000 (generous on a loaded box)
    with pytest.raises(BadRequest, match=f"{MAX_MENTIONS + 1} mentions; at most {MAX_MENTIONS}"):
        parse_send({"recipient": GROUP_A, "message": "x", "mentions": [*many, "27799999999"]})
    with pytest.raises(BadRequest, match="message is 65,537 characters"):
        parse_send({"recipient": GROUP_A, "message": "x" * (MAX_TEXT + 1)})
    for tagged in (lambda: parse_send({"recipient": GROUP_A, "message": "x" * MAX_TEXT, "mentions": ["27710000001"]}),
                   lambda: parse_send_message({"group_jid": GROUP_A, "recipient_jid": "27710000001",
                                               "message": "x" * MAX_TEXT})):
        with pytest.raises(BadRequest, match="65,549 characters with mention tags") as caught:  # the tags count too
            tagged()
        assert caught.value.status == 422  # within the document's maxLength: never sendable, not malformed
    with pytest.raises(BadRequest, match="message is 65,537"):
        parse_send_message({"group_jid": GROUP_A, "recipient_jid": "27710000001", "message": "y" * (MAX_TEXT + 1)})
    with pytest.raises(BadRequest, match="media_path must be a string"):
        parse_send({"recipient": GROUP_A, "media_path": ["a"]})


def test_parse_send_and_send_message() -> None:
    req = parse_send({"recipient": GROUP_A, "message": "DR1234567 ok", "mentioned_jid": "27710000001"})
    assert (req.recipient_jid, req.text, req.mentioned_jids) == (GROUP_A, "@27710000001 DR1234567 ok",
                                                                 ("27710000001@s.whatsapp.net",))
    req = parse_send({"recipient": "27710000001", "media_path": "plan.pdf"})
    assert (req.text, req.media_path) == ("", "plan.pdf")
    with pytest.raises(BadRequest, match="message or media_path is required"):
        parse_send({"recipient": "27710000001"})
    with pytest.raises(BadRequest, match="request body must be a JSON object"):
        parse_send([1])
    req = parse_send_message({"group_jid": GROUP_A, "recipient_jid": "27710000001@s.whatsapp.net",
                              "message": "DR1234567 - needs correction"})
    assert (req.recipient_jid, req.text) == (GROUP_A, "@27710000001 DR1234567 - needs correction")
    with pytest.raises(BadRequest, match="group_jid must be a group JID"):
        parse_send_message({"group_jid": "27710000001", "recipient_jid": "1", "message": "x"})
    with pytest.raises(BadRequest, match="recipient_jid is required"):
        parse_send_message({"group_jid": GROUP_A, "message": "x"})


def test_download_names_never_leave_the_folder() -> None:
    assert safe_filename("../../etc/passwd", "x") == "passwd"
    assert safe_filename("..", "fallback") == "fallback"
    assert safe_filename("my photo (1).jpg", "x") == "my photo _1_.jpg"
    long = safe_filename("a" * 5000 + ".jpeg", "x")
    assert len(long) == 120 and long.endswith("a.jpeg")


def test_a_mention_written_as_people_write_numbers_is_normalised() -> None:
    parsed = parse_send({"recipient": GROUP_A, "message": "DR1234567 received", "mentions": ["+27 71 000 0001"]})
    assert parsed.mentioned_jids == ("27710000001@s.whatsapp.net",)
    assert parsed.text == "@27710000001 DR1234567 received"


@pytest.mark.parametrize("error, status", [
    ("chat_jid: unknown group 1@g.us (known: 2@g.us)", 404),  # the simulator
    ("WhatsApp refused the message: failed to get group members: that group does not exist", 404),  # whatsmeow
    ("WhatsApp refused the message: failed to get group members: you're not participating in that group", 403),
    ("WhatsApp refused the message: server returned error 479", 422),
])
def test_a_refusal_that_is_the_callers_mistake_is_4xx(error: str, status: int) -> None:
    assert refusal_status(error) == status


def test_a_send_may_carry_operator_priority_kept_in_the_outbox_context() -> None:
    plain = parse_send({"recipient": GROUP_A, "message": "ok"})
    assert plain.priority == "" and plain.context is None  # a plain send's fingerprint is what it always was
    assert parse_send({"recipient": GROUP_A, "message": "ok", "priority": "normal"}) == plain
    assert parse_send({"recipient": GROUP_A, "message": "ok", "priority": None}) == plain
    operator = parse_send({"recipient": GROUP_A, "message": "approved", "priority": "operator",
                           "quoted_message_id": "3EB0AA", "quoted_sender_jid": "27710000001"})
    assert operator.context == {"priority": "operator", "quote": {"message_id": "3EB0AA",
                                                                 "sender_jid": "27710000001@s.whatsapp.net",
                                                                 "text": ""}}
    for bad in ("urgent", 1, True, ["operator"]):
        with pytest.raises(BadRequest, match="priority must be 'normal' or 'operator'"):
            parse_send({"recipient": GROUP_A, "message": "ok", "priority": bad})
