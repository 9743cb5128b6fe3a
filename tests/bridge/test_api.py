"""The bridge's REST API as a real process against the real simulator: sends with mentions and
media, the durable outbox with Idempotency-Key, downloads, 400s and the bearer token."""
from __future__ import annotations

import base64
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.bridge_support import call, health, inject, rows, sent, start_bridge, start_sim
from tests.conftest import BASE_CONFIG, GROUP_A, Processes, wait_until


@pytest.mark.slow
def test_send_with_mentions_send_message_and_a_refused_send(procs: Processes, data_dir: Path) -> None:
    _, sim = start_sim(procs, data_dir)
    _, url = start_bridge(procs, data_dir)
    status, body = call("POST", f"{url}/api/send", {"recipient": GROUP_A, "message": "DR1234567 received",
                                                    "mentions": ["27710000001", "27710000002@s.whatsapp.net"]})
    assert status == 200 and body["success"] is True and body["message"] == f"Message sent to {GROUP_A}"
    status, body = call("POST", f"{url}/api/send", {"recipient": "27710000003", "message": "hi",
                                                    "mentioned_jid": "27710000003"})
    assert (status, body["message"]) == (200, "Message sent to 27710000003")
    status, body = call("POST", f"{url}/send-message", {"group_jid": GROUP_A, "recipient_jid": "27710000001@s.whatsapp.net",
                                                        "message": "DR1234567 - needs correction"})
    assert status == 200, body
    assert [(s["recipient"], s["text"], s["mentioned_jids"]) for s in sent(sim)] == [
        (GROUP_A, "@27710000001 @27710000002 DR1234567 received",
         ["27710000001@s.whatsapp.net", "27710000002@s.whatsapp.net"]),
        ("27710000003@s.whatsapp.net", "@27710000003 hi", ["27710000003@s.whatsapp.net"]),
        (GROUP_A, "@27710000001 DR1234567 - needs correction", ["27710000001@s.whatsapp.net"])]
    stored = rows(data_dir, "SELECT m.id, m.sender, m.is_from_me, mm.source, m.content FROM messages m "
                            "JOIN message_meta mm USING (id, chat_jid) ORDER BY m.rowid")
    assert [(r[1], r[2], r[3]) for r in stored] == [("27710000000", 1, "sent")] * 3
    assert [r[0] for r in stored] == [s["id"] for s in sent(sim)]
    assert rows(data_dir, "SELECT name FROM chats WHERE jid = '27710000003@s.whatsapp.net'") == [("27710000003",)]

    # A send to a group the server does not know is the caller's mistake: 404 with the reason, and a retry
    # does not try again.
    unknown = {"recipient": "120363999999999999@g.us", "message": "x"}
    status, body = call("POST", f"{url}/api/send", unknown, {"Idempotency-Key": "k-unknown"})
    assert (status, body["success"]) == (404, False) and "unknown group 120363999999999999@g.us" in body["message"]
    assert call("POST", f"{url}/api/send", unknown, {"Idempotency-Key": "k-unknown"}) == (status, body)
    assert rows(data_dir, "SELECT status FROM outbox WHERE idempotency_key = 'k-unknown'") == [("failed",)]
    assert len(sent(sim)) == 3 and health(url)["outbox_depth"] == 0


@pytest.mark.slow
def test_media_send_and_download(procs: Processes, data_dir: Path) -> None:
    _, sim = start_sim(procs, data_dir)
    _, url = start_bridge(procs, data_dir)
    (data_dir / "media").mkdir()
    (data_dir / "media" / "drop.jpg").write_bytes(b"\xff\xd8 jpeg bytes")
    status, body = call("POST", f"{url}/api/send", {"recipient": GROUP_A, "message": "site photo",
                                                    "media_path": str(data_dir / "media" / "drop.jpg")})
    assert status == 200, body
    assert [(s["media_type"], s["text"]) for s in sent(sim)] == [("image", "site photo")]

    photo = os.urandom(2048)
    message = inject(sim, "pole DR7654321", GROUP_A,
                     media={"type": "image", "filename": "../pole.jpg", "data_b64": base64.b64encode(photo).decode()})
    wait_until(lambda: rows(data_dir, "SELECT media_type FROM messages WHERE id = ?", message["id"]) == [("image",)],
               message="the media message stored")
    status, body = call("POST", f"{url}/api/download", {"message_id": message["id"], "chat_jid": GROUP_A})
    assert status == 200 and body["success"] is True, body
    assert body["message"] == "Successfully downloaded image media" and body["filename"] == "pole.jpg"
    path = Path(body["path"])
    assert path.parent == (data_dir / "accounts/main/downloads" / GROUP_A / message["id"]).resolve()
    assert path.read_bytes() == photo
    assert call("POST", f"{url}/api/download", {"message_id": "nope", "chat_jid": GROUP_A})[0] == 404
    text_only = inject(sim, "DR1", GROUP_A)["id"]
    wait_until(lambda: rows(data_dir, "SELECT 1 FROM messages WHERE id = ?", text_only), message="text stored")
    status, body = call("POST", f"{url}/api/download", {"message_id": text_only, "chat_jid": GROUP_A})
    assert (status, body["message"]) == (400, "Failed to download media: not a media message")


@pytest.mark.slow
def test_sends_while_disconnected_are_queued_and_delivered_exactly_once(procs: Processes, data_dir: Path) -> None:
    sim_proc, _ = start_sim(procs, data_dir)
    bridge, url = start_bridge(procs, data_dir)
    sim_proc.terminate()  # WhatsApp is away
    wait_until(lambda: health(url)["state"] == "disconnected", message="the bridge to see the outage")

    key = {"Idempotency-Key": "drop-DR1234567-ack"}
    status, first = call("POST", f"{url}/api/send", {"recipient": GROUP_A, "message": "DR1234567 received"}, key)
    assert status == 202 and first["success"] is True and first["queued"] is True
    status, retry = call("POST", f"{url}/api/send", {"recipient": GROUP_A, "message": "DR1234567 received"}, key)
    assert (status, retry["id"]) == (202, first["id"])  # a retry is the same send, not a second one
    status, second = call("POST", f"{url}/api/send", {"recipient": GROUP_A, "message": "DR7654321 received"},
                          {"Idempotency-Key": "drop-DR7654321-ack"})  # keyless: tests/bridge/test_exactly_once.py
    assert status == 202 and second["id"] != first["id"]
    assert health(url)["outbox_depth"] == 2

    os.kill(bridge.pid, signal.SIGKILL)  # and the bridge dies with a full outbox
    bridge.wait(timeout=10)
    _, sim = start_sim(procs, data_dir, old_pid=sim_proc.pid)
    _, url = start_bridge(procs, data_dir)
    wait_until(lambda: len(sent(sim)) == 2 and health(url)["outbox_depth"] == 0, message="the outbox drained")
    assert [(s["id"], s["text"]) for s in sent(sim)] == [(first["id"], "DR1234567 received"),
                                                        (second["id"], "DR7654321 received")]  # in order
    status, again = call("POST", f"{url}/api/send", {"recipient": GROUP_A, "message": "DR1234567 received"}, key)
    assert (status, again["id"], again["message"]) == (200, first["id"], f"Message sent to {GROUP_A}")
    assert len(sent(sim)) == 2  # still exactly once, across a restart
    assert rows(data_dir, "SELECT COUNT(*) FROM messages WHERE is_from_me = 1") == [(2,)]


TOKEN = "s3cret-token"


@pytest.mark.slow
def test_bad_input_gets_400_naming_the_problem_and_a_token_is_enforced(procs: Processes, data_dir: Path,
                                                                       write_config: Callable[[str], Path]) -> None:
    write_config(BASE_CONFIG.replace('phone = "27710000000"', f'phone = "27710000000"\napi_token = "{TOKEN}"'))
    _, sim = start_sim(procs, data_dir)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    proc, url = start_bridge(procs, data_dir, connected=False)
    wait_until(lambda: call("GET", f"{url}/api/health", headers=auth)[0] == 200, message="connected")

    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        for method, path in (("GET", "/api/health"), ("POST", "/api/send"), ("POST", "/send-message"),
                             ("POST", "/api/download")):
            status, body = call(method, f"{url}{path}", {"recipient": GROUP_A, "message": "x"}, headers)
            assert (status, body["success"]) == (401, False), (headers, path)
            assert "bearer token" in body["message"]

    (data_dir / "media").mkdir()
    (data_dir.parent / "secret.txt").write_text("not yours")
    os.symlink(data_dir.parent / "secret.txt", data_dir / "media" / "innocent.pdf")
    cases = [  # (body, status, words of the answer): 400 malformed, 403 not a file we may send, 404 no such file
        (b"{not json", 400, "bad JSON"),
        ({"message": "x"}, 400, "recipient is required"),
        ({"recipient": GROUP_A}, 400, "message or media_path is required"),
        ({"recipient": GROUP_A, "message": "", "media_path": "  "}, 400, "message or media_path is required"),
        ({"recipient": GROUP_A, "message": False, "media_path": "innocent.pdf"}, 400, "message must be a string"),
        ({"recipient": GROUP_A, "mesage": "x"}, 400, "mesage: unknown field (known: recipient, message, media_path, "
                                                     "mentions, mentioned_jid, quoted_message_id, quoted_sender_jid, "
                                                     "quoted_content, priority)"),
        ({"recipient": "bob@example.com", "message": "x"}, 400, "malformed recipient JID 'bob@example.com'"),
        ({"recipient": "12ab", "message": "x"}, 400, "malformed recipient '12ab'"),
        ({"recipient": GROUP_A, "message": "x", "mentions": ["not-a-number"]}, 400, "malformed mention"),
        ({"recipient": GROUP_A, "media_path": str(data_dir.parent / "secret.txt")}, 403,
         "outside the allowed media folders"),
        ({"recipient": GROUP_A, "media_path": "innocent.pdf"}, 403, "is or passes through a symbolic link"),
        ({"recipient": GROUP_A, "media_path": "missing.jpg"}, 404, "media file not found"),
    ]
    for body, expected, problem in cases:
        raw = body if isinstance(body, bytes) else None
        status, answer = call("POST", f"{url}/api/send", None if raw else body, auth, raw=raw)
        assert status == expected and answer["success"] is False and problem in answer["message"], (body, answer)
    status, answer = call("POST", f"{url}/send-message", {"group_jid": GROUP_A, "message": "x"}, auth)
    assert (status, answer["message"]) == (400, "recipient_jid is required")
    status, answer = call("POST", f"{url}/api/download", {"message_id": "x"}, auth)
    assert (status, answer["message"]) == (400, "Message ID and Chat JID are required")
    status, answer = call("POST", f"{url}/api/download", {"message_id": "x", "chat": GROUP_A}, auth)
    assert (status, answer["message"]) == (400, "chat: unknown field (known: message_id, chat_jid)")
    assert sent(sim) == [] and rows(data_dir, "SELECT COUNT(*) FROM outbox") == [(0,)]  # nothing half-sent
    assert proc.poll() is None
