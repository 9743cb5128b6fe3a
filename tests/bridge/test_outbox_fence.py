"""The outbox's fence and withdrawals (bridge/fence.py): a send made under a cluster's sender lease goes only while
its token is known valid, is withdrawn (never sent) once superseded, and is queued again under a newer token;
sends are taken back by key, but never the one being handed to WhatsApp; on a real store file, then through a
running bridge's API (the lease keeper's word, the web guard, bad input named), and an older messages.db upgraded.
"""
from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridge import schema
from bridge.fence import Fences, FenceWord, SendFence
from bridge.outbox import Outbox
from bridge.sending import SendRequest
from bridge.store import Store
from bridge.transport import OutgoingMessage, SendResult
from tests.bridge.test_outbox import ScriptedTransport, request
from tests.bridge_support import call, rows, sent, start_bridge, start_sim
from tests.conftest import GROUP_A, GROUP_B, Processes, wait_until
from watchdog.shared import clock

ME = "27710000000@s.whatsapp.net"
MAIN = "main"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def fenced_outbox(store: Store, transport: ScriptedTransport) -> tuple[Outbox, Clock]:
    now = Clock()
    return Outbox(store, transport, ME, delivery_wait=0, fences=Fences(now)), now


def to(chat: str, text: str) -> SendRequest:
    return SendRequest(chat, chat, text, (), None)


def test_a_fenced_send_goes_only_while_its_token_is_valid_and_is_withdrawn_once_superseded(tmp_path: Path) -> None:
    store, transport = Store(tmp_path / "messages.db"), ScriptedTransport()
    outbox, now = fenced_outbox(store, transport)
    seven, eight = SendFence(MAIN, 7), SendFence(MAIN, 8)

    async def scenario() -> dict[str, tuple[int, dict]]:
        answers = {"unheard": await outbox.submit(request("DR1"), None, "k1", "/api/send", seven)}
        answers["other chat"] = await outbox.submit(to(GROUP_B, "free"), None, "k0", "/api/send")  # unfenced
        answers["behind"] = await outbox.submit(request("mcp"), None, "k2", "/api/send")  # same chat: waits behind
        outbox.fence_word(FenceWord(seven, now.now + 4))
        await outbox.drain()
        now.now += 5  # past the validity: the keeper said nothing since (a paused host)
        answers["expired"] = await outbox.submit(request("DR3"), None, "k3", "/api/send", seven)
        word = outbox.fence_word(FenceWord(eight, now.now + 4))  # another grant (a takeover): 7's rows withdrawn
        answers["word"] = (200, word)
        answers["stale retry"] = await outbox.submit(request("DR3"), None, "k3", "/api/send", seven)
        answers["never queued"] = await outbox.submit(request("DR4"), None, "k4", "/api/send", seven)
        answers["again"] = await outbox.submit(request("DR3"), None, "k3", "/api/send", eight)
        return answers

    answers = asyncio.run(scenario())
    assert answers["unheard"][0] == 202 and "waits until its sender lease (main, token 7)" in answers["unheard"][1]["message"]
    assert answers["other chat"][0] == 200 and answers["behind"][0] == 202  # one chat's order is kept
    assert answers["expired"][0] == 202
    assert answers["word"][1]["withdrawn"] == [answers["expired"][1]["id"]] and answers["word"][1]["token"] == 8
    assert answers["stale retry"][0] == 409 and answers["stale retry"][1]["withdrawn"] is True
    assert "token 7) is no longer valid" in answers["stale retry"][1]["message"]
    assert answers["never queued"][0] == 409 and store.outbox_by_key("k4") is None
    assert answers["again"][0] == 200 and answers["again"][1]["id"] == answers["expired"][1]["id"]  # same message
    assert transport.sent == ["free", "DR1", "mcp", "DR3"]  # DR3 once, under token 8
    assert store.outbox_row(answers["expired"][1]["id"]).fence == eight  # type: ignore[union-attr]


def test_a_lost_token_withdraws_its_rows_and_a_later_word_repeats_them_for_a_keeper_that_missed_it(
        tmp_path: Path) -> None:
    store = Store(tmp_path / "messages.db")
    outbox, now = fenced_outbox(store, ScriptedTransport(connected=False))
    five = SendFence(MAIN, 5)

    async def scenario() -> tuple[dict, dict, dict]:
        outbox.fence_word(FenceWord(five, now.now + 4))
        await outbox.submit(request("DR1"), None, "k1", "/api/send", five)  # not connected: queued
        lost = outbox.fence_word(FenceWord(five, None))
        renewal_of_lost = outbox.fence_word(FenceWord(five, now.now + 4))  # late, out of order: changes nothing
        newer = outbox.fence_word(FenceWord(SendFence(MAIN, 6), now.now + 4))
        return lost, renewal_of_lost, newer

    lost, renewal_of_lost, newer = asyncio.run(scenario())
    (row,) = store.conn.execute("SELECT message_id, status FROM outbox").fetchall()
    assert row[1] == "withdrawn" and lost["withdrawn"] == [row[0]] and lost["valid_s"] == 0
    assert renewal_of_lost == {"lease": MAIN, "token": 5, "valid_s": 0.0, "withdrawn": [], "doubt": []}
    assert newer["withdrawn"] == [row[0]] and newer["valid_s"] == 4  # said again with the new token


def test_a_withdrawal_takes_back_queued_sends_but_never_the_one_being_sent(tmp_path: Path) -> None:
    store = Store(tmp_path / "messages.db")

    class Slow(ScriptedTransport):
        def __init__(self) -> None:
            super().__init__()
            self.handed = asyncio.Event()
            self.answer = asyncio.Event()

        async def send(self, message: OutgoingMessage) -> SendResult:
            self.handed.set()
            await self.answer.wait()
            self.sent.append(message.text)
            return SendResult(message.message_id, clock.now())

    transport = Slow()
    outbox = Outbox(store, transport, ME, delivery_wait=0)

    async def scenario() -> tuple[dict, tuple[int, dict]]:
        first = asyncio.create_task(outbox.submit(request("DR1"), None, "k1", "/api/send"))
        await transport.handed.wait()  # DR1 is WhatsApp's now
        await outbox.submit(request("DR2"), None, "k2", "/api/send")
        states = outbox.withdraw(("k1", "k2", "nope"), "a failover")
        transport.answer.set()
        await first
        await outbox.drain()
        return states, await outbox.submit(request("DR2"), None, "k2", "/api/send")

    states, again = asyncio.run(scenario())
    assert states == {"k1": "sending", "k2": "withdrawn", "nope": "unknown"}
    assert again[0] == 200  # posted again (a failback): queued again and sent, not answered "withdrawn"
    assert transport.sent == ["DR1", "DR2"]
    assert outbox.withdraw(("k1",), "late") == {"k1": "sent"}


@pytest.mark.slow  # real sim and bridge processes
def test_a_validity_ends_with_the_keeper_process_that_gave_it() -> None:
    """A monitor keeping the lease dies: the other host may take the lease at once (its session is gone), so what
    it told the bridge is void at once, not when the validity runs out; a sibling keeper's word still counts."""
    def keeper() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)

    gone = keeper()
    gone.stdin.close()  # type: ignore[union-attr]
    gone.wait()
    one, two = keeper(), keeper()
    try:
        fences, three = Fences(), SendFence(MAIN, 3)
        fences.renewed(MAIN, 3, time.monotonic() + 60, keeper=one.pid)
        assert fences.allows(three)
        one.kill()  # not reaped: a zombie's pidfd is readable too
        wait_until(lambda: not fences.allows(three), timeout=10, message="the dead keeper's word to be void")
        assert not fences.superseded(three)  # its rows wait for a word, not withdrawn
        fences.renewed(MAIN, 3, time.monotonic() + 60, keeper=gone.pid)  # a word from a keeper already gone: void
        assert not fences.allows(three)
        fences.renewed(MAIN, 3, time.monotonic() + 60, keeper=two.pid)  # the node's other process keeps it
        assert fences.allows(three) and fences.snapshot(MAIN)["valid_s"] > 59
        fences.renewed(MAIN, 3, time.monotonic() + 30)  # unnamed (a keeper of before): until its deadline only
        two.kill()
        two.wait()
        assert fences.allows(three) and 29 < fences.snapshot(MAIN)["valid_s"] <= 30
    finally:
        for child in (one, two):
            child.kill()
            child.wait()
            child.stdin.close()  # type: ignore[union-attr]


def test_a_running_bridge_takes_the_keepers_word_refuses_forgeries_and_names_bad_input(
        procs: Processes, data_dir: Path) -> None:
    _, sim = start_sim(procs, data_dir)
    _, url = start_bridge(procs, data_dir)
    fence = {"lease": MAIN, "token": 3}
    status, queued = call("POST", f"{url}/api/send", {"recipient": GROUP_A, "message": "DR1 received", "fence": fence},
                          headers={"Idempotency-Key": "fb-1"})
    assert status == 202 and sent(sim) == []  # no word yet: it waits
    for headers, where in (({"Origin": "http://evil.example"}, "not allowed"),
                           ({"Content-Type": "text/plain"}, "text/plain")):
        got, answer = call("POST", f"{url}/api/fence", {"lease": MAIN, "token": 3, "valid_until": time.monotonic() + 5},
                           headers=headers)
        assert got in (403, 415) and where in answer["message"]
    assert sent(sim) == []
    got, word = call("POST", f"{url}/api/fence", {"lease": MAIN, "token": 3, "valid_until": time.monotonic() + 5})
    assert got == 200 and word["token"] == 3 and 0 < word["valid_s"] <= 5
    wait = time.monotonic() + 15
    while not sent(sim) and time.monotonic() < wait:
        time.sleep(0.05)
    assert [s["id"] for s in sent(sim)] == [queued["id"]]
    got, word = call("POST", f"{url}/api/fence", {"lease": MAIN, "token": 3, "lost": True})
    assert (got, word["withdrawn"], word["valid_s"]) == (200, [], 0.0)
    got, answer = call("POST", f"{url}/api/react", {"recipient": GROUP_A, "message_id": "M1", "emoji": "✅",
                                                   "sender_jid": "27710000001@s.whatsapp.net", "fence": fence},
                       headers={"Idempotency-Key": "fb-2"})
    assert got == 409 and answer["ok"] is False and answer["withdrawn"] is True  # the fork's shape, and ours
    got, answer = call("POST", f"{url}/api/withdraw", {"idempotency_keys": ["fb-1", "fb-9"]})
    assert got == 200 and answer["states"] == {"fb-1": "sent", "fb-9": "unknown"} and answer["withdrawn"] == []
    for path, body, headers, status, words in (
            ("/api/send", {"recipient": GROUP_A, "message": "x", "fence": {"token": 3}}, {}, 400, "fence.lease must"),
            ("/api/send", {"recipient": GROUP_A, "message": "x", "fence": {"lease": MAIN, "token": -1}}, {}, 400,
             "fence.token must be a positive integer"),
            ("/send-message", {"group_jid": GROUP_A, "recipient_jid": "27710000001", "message": "x", "fence": 3}, {},
             400, "fence must be an object"),
            ("/api/fence", {"lease": MAIN, "token": 3}, {}, 400, "either valid_until"),
            ("/api/fence", {"lease": MAIN, "token": "3", "lost": True}, {}, 400, "token must be a positive integer"),
            ("/api/fence", {"lease": MAIN, "token": 4, "valid_until": time.monotonic() + 86400}, {}, 422,
             "more than 3600 s ahead"),
            ("/api/fence", {"lease": " main", "token": 4, "lost": True}, {}, 400, "lease must be"),
            ("/api/fence", {"lease": MAIN, "token": 4, "valid_until": time.monotonic() + 5, "keeper": -1}, {}, 400,
             "keeper must be the lease keeper's process id"),
            ("/api/withdraw", {"idempotency_keys": []}, {}, 400, "idempotency_keys is required"),
            ("/api/withdraw", {"idempotency_keys": ["k"], "all": True}, {}, 400, "all")):
        got, answer = call("POST", f"{url}{path}", body, headers=headers)
        assert (got, answer["success"]) == (status, False) and words in answer["message"], (path, body, answer)
    assert rows(data_dir, "SELECT status, COUNT(*) FROM outbox GROUP BY status") == [("sent", 1)]


def test_an_older_messages_db_is_upgraded_keeping_its_outbox(tmp_path: Path) -> None:
    path = tmp_path / "messages.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for migration in schema.MIGRATIONS[:6]:  # the release before the fence
        for step in migration.steps:
            conn.executescript(step)  # type: ignore[arg-type]
    conn.execute("INSERT INTO outbox (message_id, idempotency_key, recipient, recipient_jid, text, status, "
                 "created_at) VALUES ('3EB0A', 'old', 'g', ?, 'DR1', 'pending', '2026-12-01 00:00:00.000000+00:00')",
                 (GROUP_A,))
    conn.execute("PRAGMA user_version = 6")
    conn.close()
    store = Store(path)
    assert store.conn.execute("PRAGMA user_version").fetchone() == (schema.SCHEMA_VERSION,)
    (old,) = store.outbox_pending()
    assert (old.seq, old.message_id, old.status, old.fence) == (1, "3EB0A", "pending", None)
    outbox = Outbox(store, ScriptedTransport(), ME, delivery_wait=0)
    status, body = asyncio.run(outbox.submit(request("DR2"), None, "new", "/api/send", SendFence(MAIN, 1)))
    assert status == 202 and store.outbox_row(body["id"]).seq == 2  # type: ignore[union-attr]
    assert outbox.withdraw(("old", "new"), "test") == {"old": "sent", "new": "withdrawn"}  # the old row: unfenced
    with pytest.raises(sqlite3.IntegrityError):
        store.conn.execute("UPDATE outbox SET status = 'lost' WHERE seq = 1")
