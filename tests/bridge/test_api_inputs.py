"""The running bridge against inputs that used to hurt it: each answered 4xx naming the problem, nothing
queued or sent, no traceback; poison messages stored sanitised and acknowledged with the rest of the batch."""
from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import pytest

from tests.bridge_support import call, health, inject, rows, sent, sessions, start_bridge, start_sim
from tests.conftest import GROUP_A, Processes, wait_until

pytestmark = pytest.mark.slow  # real sim and bridge processes


def bridge_log(data_dir: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in data_dir.parent.glob("bridge-*.log"))


def test_bad_inputs_are_4xx_with_a_message_and_never_a_traceback(procs: Processes, data_dir: Path) -> None:
    _, sim = start_sim(procs, data_dir)
    _, url = start_bridge(procs, data_dir)
    (data_dir / "media").mkdir()
    with open(data_dir / "media" / "big.mp4", "wb") as f:
        f.truncate(2 * 1024**3)  # sparse 2 GB: used to be read whole and base64-encoded on the event loop
    g = GROUP_A.encode()
    cases = [  # (path, raw body, headers, status, words of the answer)
        ("/api/send", b"[" * 100_000, {}, 400, "nested deeper than 32"),
        ("/api/send", b'{"recipient": "%s", "message": "bad \\udfff"}' % g, {}, 400, "message contains a lone surrogate"),
        ("/api/download", b'{"message_id": "\\ud800", "chat_jid": "%s"}' % g, {}, 400, "message_id contains a lone"),
        ("/api/send", b'{"recipient": "%s", "message": "x"}' % g, {"Idempotency-Key": "k\xff"}, 400,
         "Idempotency-Key must be printable UTF-8"),
        ("/api/send", b'{"recipient": "%s", "media_path": "a\\u0000.jpg"}' % g, {}, 400, "NUL character"),
        ("/api/send", b'{"recipient": "%s", "message": "DR1\\u0000"}' % g, {}, 400, "message contains a NUL character"),
        ("/api/send", b'{"recipient": "%s", "message": "x", "mentions": [%s]}' % (g, b"2" * 5000), {}, 400,
         "mentions[0] is a number of 5,000 digits"),
        ("/api/send", json.dumps({"recipient": GROUP_A, "message": "x",
                                  "mentions": [str(27700000000 + n) for n in range(10_000)]}).encode(), {}, 400,
         "10000 mentions; at most 1024"),
        ("/api/send", json.dumps({"recipient": GROUP_A, "message": "x" * 65_537}).encode(), {}, 400,
         "WhatsApp's limit is 65,536"),
        ("/api/send", json.dumps({"recipient": GROUP_A, "message": "x", "media_path": "big.mp4"}).encode(), {}, 413,
         "the limit for video is 16 MB"),
        ("/api/download", json.dumps({"message_id": "x" * 5000, "chat_jid": GROUP_A}).encode(), {}, 400,
         "message_id longer than 200"),
    ]
    for path, raw, headers, status, words in cases:
        started = time.monotonic()
        got, answer = call("POST", f"{url}{path}", raw=raw, headers=headers)
        assert got == status and answer["success"] is False and words in answer["message"], (raw[:60], got, answer)
        assert time.monotonic() - started < 5, raw[:60]
    assert health(url)["status"] == "ok" and health(url)["outbox_depth"] == 0
    assert sent(sim) == [] and rows(data_dir, "SELECT COUNT(*) FROM outbox") == [(0,)]
    assert "Traceback" not in bridge_log(data_dir)
    assert list((data_dir / "accounts/main/outbox-media").glob("*/*")) == []  # no copy of refused media left


def test_idempotency_conflicts_unique_downloads_and_media_swapped_after_the_check(procs: Processes,
                                                                                  data_dir: Path) -> None:
    sim_proc, sim = start_sim(procs, data_dir)
    _, url = start_bridge(procs, data_dir)
    key = {"Idempotency-Key": "drop-DR1-ack"}
    assert call("POST", f"{url}/api/send", {"recipient": GROUP_A, "message": "DR1 received"}, key)[0] == 200
    status, answer = call("POST", f"{url}/api/send", {"recipient": GROUP_A, "message": "DR2 received"}, key)
    assert status == 422 and "already used for a different request body" in answer["message"]
    status, answer = call("POST", f"{url}/send-message", {"group_jid": GROUP_A, "recipient_jid": "27710000001",
                                                          "message": "DR1 received"}, key)
    assert status == 422 and "another endpoint (/api/send)" in answer["message"]
    assert [s["text"] for s in sent(sim)] == ["DR1 received"]

    # Two media with the same file name in one chat are two files.
    photos = [os.urandom(512), os.urandom(512)]
    ids = [inject(sim, f"pole {n}", GROUP_A, media={"type": "image", "filename": "pole.jpg",
                                                    "data_b64": base64.b64encode(p).decode()})["id"]
           for n, p in enumerate(photos)]
    long_name = inject(sim, "plan", GROUP_A, media={"type": "document", "filename": "p" * 5000 + ".pdf",
                                                    "data_b64": base64.b64encode(b"%PDF").decode()})["id"]
    wait_until(lambda: rows(data_dir, "SELECT COUNT(*) FROM messages WHERE media_type IS NOT NULL") == [(3,)],
               message="the media messages stored")
    paths = [Path(call("POST", f"{url}/api/download", {"message_id": i, "chat_jid": GROUP_A})[1]["path"]) for i in ids]
    assert paths[0] != paths[1] and [p.read_bytes() for p in paths] == photos
    assert {oct(p.stat().st_mode & 0o777) for p in paths} == {"0o600"} and oct(paths[0].parent.stat().st_mode & 0o777) == "0o700"
    status, answer = call("POST", f"{url}/api/download", {"message_id": long_name, "chat_jid": GROUP_A})
    assert status == 200 and len(answer["filename"]) <= 120 and answer["filename"].endswith(".pdf")

    # A media send queued while WhatsApp is away sends the bytes that were checked, not what the path names later.
    (data_dir / "media").mkdir()
    (data_dir / "media" / "site.jpg").write_bytes(b"the real photo")
    (data_dir.parent / "passwd").write_text("root:x:0:0")
    sim_proc.terminate()
    wait_until(lambda: health(url)["state"] == "disconnected", message="the bridge to see the outage")
    status, queued = call("POST", f"{url}/api/send", {"recipient": GROUP_A, "message": "site",
                                                      "media_path": "site.jpg"}, {"Idempotency-Key": "m1"})
    assert status == 202, queued
    (data_dir / "media" / "site.jpg").unlink()
    os.symlink(data_dir.parent / "passwd", data_dir / "media" / "site.jpg")
    _, sim = start_sim(procs, data_dir, old_pid=sim_proc.pid)
    wait_until(lambda: [s for s in sent(sim) if s["id"] == queued["id"]], timeout=20, message="the queued media sent")
    assert [s["media_type"] for s in sent(sim) if s["id"] == queued["id"]] == ["image"]
    wait_until(lambda: not list((data_dir / "accounts/main/outbox-media").glob("*/*")),
               message="the private copy removed once sent")


def test_a_poison_message_is_stored_sanitised_and_the_batch_acknowledged(procs: Processes, data_dir: Path) -> None:
    _, sim = start_sim(procs, data_dir)
    _, url = start_bridge(procs, data_dir)
    batch = [{"chat_jid": GROUP_A, "sender_jid": "27710000001@s.whatsapp.net", "text": text}
             for text in ("DR1111111", "bad \udfff DR2222222", "DR3333333")]
    status, injected = call("POST", f"{sim}/sim/inject", raw=json.dumps(batch).encode())
    assert status == 200, injected
    wait_until(lambda: rows(data_dir, "SELECT COUNT(*) FROM messages") == [(3,)], message="the whole batch stored")
    assert [r[0] for r in rows(data_dir, "SELECT content FROM messages ORDER BY rowid")] == [
        "DR1111111", "bad \ufffd DR2222222", "DR3333333"]
    wait_until(lambda: sessions(sim)["queue_depth"] == 0, message="the batch acknowledged")
    assert health(url)["quarantine"] == {"sanitised": 1, "quarantined": 0} and health(url)["status"] == "ok"
    (raw, action), = rows(data_dir, "SELECT raw, action FROM quarantine")
    assert action == "sanitised" and json.loads(raw)["text"] == "bad \udfff DR2222222"  # the raw payload kept
    records = [json.loads(line) for line in (data_dir / "recoveries.jsonl").read_text().splitlines()]
    assert [(r["event"], r["sanitised"]) for r in records if r["event"] == "quarantine"] == [("quarantine", 1)]
