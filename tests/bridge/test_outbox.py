"""The outbox on a real store file: a row that can never be sent is dead-lettered once and the rest drain;
Idempotency-Key conflicts; keyless retries recognised by content; a keyless request waits for delivery."""
from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

from bridge.outbox import Outbox
from bridge.pace import PaceConfig, Pacer
from bridge.sending import SendRequest
from bridge.outbox_store import IdempotencyConflict, OutboxRow
from bridge.store import Store
from bridge.transport import (Capabilities, IncomingMessage, MediaInfo, NotConnected, OutgoingMessage, SendResult,
                              Transport)
from tests.conftest import GROUP_A
from watchdog.shared import clock


class ScriptedTransport(Transport):
    """Stands in for WhatsApp: `poison` texts drop the connection mid-send, as a 100 MB frame did."""

    capabilities = Capabilities(history_request=False)

    def __init__(self, connected: bool = True, poison: tuple[str, ...] = ()) -> None:
        self.connected = connected
        self.poison = poison
        self.sent: list[str] = []
        self.tries: list[str] = []

    async def send(self, message: OutgoingMessage) -> SendResult:
        self.tries.append(message.text)
        if not self.connected or message.text in self.poison:
            raise NotConnected("connection lost")
        self.sent.append(message.text)
        return SendResult(message.message_id, clock.now())  # WhatsApp's time: the host's, through the seam

    async def run(self, handler: object) -> None: ...

    async def request_history(self, chat_jid: str, since: datetime, until: datetime) -> list[IncomingMessage]:
        return []

    async def joined_groups(self) -> list[str]:
        return [GROUP_A]

    async def download(self, media: MediaInfo) -> bytes:
        return b""

    async def close(self) -> None: ...


def request(text: str) -> SendRequest:
    return SendRequest(GROUP_A, GROUP_A, text, (), None)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "messages.db")


def test_a_row_that_never_gets_through_is_dead_lettered_once_and_the_rest_drain(store: Store) -> None:
    transport = ScriptedTransport(poison=("huge",))
    dead: list[tuple[OutboxRow, str]] = []
    outbox = Outbox(store, transport, "27710000000@s.whatsapp.net", max_attempts=3, delivery_wait=0,
                    on_dead_letter=lambda row, reason: dead.append((row, reason)))

    async def scenario() -> list[tuple[int, dict]]:
        answers = [await outbox.submit(request(text), None, f"k-{text}", "/api/send") for text in ("huge", "b", "c")]
        for _ in range(5):  # reconnects: each drain tries the head of the queue again
            await outbox.drain()
        return answers

    answers = asyncio.run(scenario())
    assert [a[0] for a in answers] == [202, 202, 202]
    assert transport.sent == ["b", "c"] and transport.tries.count("huge") == 3
    assert len(dead) == 1 and dead[0][0].text == "huge" and "3 attempts" in dead[0][1]
    assert store.outbox_depth() == 0 and store.outbox_dead_letters() == 1
    status, body = asyncio.run(outbox.submit(request("huge"), None, "k-huge", "/api/send"))
    assert status == 422 and "dead-lettered" in body["message"] and len(dead) == 1  # reported once


def test_an_attempt_is_counted_before_the_send_so_a_crash_during_it_counts(store: Store) -> None:
    class Hangs(ScriptedTransport):
        async def send(self, message: OutgoingMessage) -> SendResult:
            await asyncio.Event().wait()  # the process dies here

    outbox = Outbox(store, Hangs(), "27710000000@s.whatsapp.net", delivery_wait=0)

    async def scenario() -> None:
        task = asyncio.create_task(outbox.submit(request("x"), None, "k", "/api/send"))
        while not store.conn.execute("SELECT attempts FROM outbox_requests").fetchall() == [(1,)]:
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(scenario())
    assert Store(store.path).conn.execute("SELECT attempts FROM outbox_requests").fetchall() == [(1,)]


def test_idempotency_key_reused_for_another_request_is_a_conflict(store: Store) -> None:
    outbox = Outbox(store, ScriptedTransport(), "27710000000@s.whatsapp.net", delivery_wait=0)
    status, first = asyncio.run(outbox.submit(request("DR1 ok"), None, "key-1", "/api/send"))
    assert status == 200
    assert asyncio.run(outbox.submit(request("DR1 ok"), None, "key-1", "/api/send")) == (200, first)
    with pytest.raises(IdempotencyConflict, match="already used for a different request body"):
        asyncio.run(outbox.submit(request("DR2 ok"), None, "key-1", "/api/send"))
    with pytest.raises(IdempotencyConflict, match=r"already used for another endpoint \(/api/send\)"):
        asyncio.run(outbox.submit(request("DR1 ok"), None, "key-1", "/send-message"))
    assert store.conn.execute("SELECT COUNT(*) FROM outbox").fetchone() == (1,)


def test_the_same_send_reposted_with_operator_priority_is_the_same_row_not_a_conflict(store: Store) -> None:
    """A monitor upgraded between a post and its retry adds the priority: the same send under the same key."""
    outbox = Outbox(store, ScriptedTransport(connected=False), "27710000000@s.whatsapp.net", delivery_wait=0)
    status, first = asyncio.run(outbox.submit(request("DR1 approved"), None, "key-1", "/api/send"))
    urgent = replace(request("DR1 approved"), priority="operator")
    assert status == 202 and asyncio.run(outbox.submit(urgent, None, "key-1", "/api/send")) == (202, first)
    with pytest.raises(IdempotencyConflict, match="a different request body"):  # what it says still counts
        asyncio.run(outbox.submit(replace(urgent, text="DR1 rejected"), None, "key-1", "/api/send"))
    assert store.conn.execute("SELECT COUNT(*) FROM outbox").fetchone() == (1,)


def test_a_keyless_retry_is_the_same_send_and_waits_for_delivery(store: Store) -> None:
    transport = ScriptedTransport(connected=False)
    outbox = Outbox(store, transport, "27710000000@s.whatsapp.net", delivery_wait=5.0, dedupe_window=60)

    async def scenario() -> tuple[tuple[int, dict], tuple[int, dict], tuple[int, dict]]:
        async def reconnect() -> None:
            while not outbox._done:  # the request is waiting for its row
                await asyncio.sleep(0.01)
            transport.connected = True
            await outbox.drain()
        _, first = await asyncio.gather(reconnect(), outbox.submit(request("hello"), None, None, "/send-message"))
        retry = await outbox.submit(request("hello"), None, None, "/send-message")
        other_endpoint = await outbox.submit(request("hello"), None, None, "/api/send")
        return first, retry, other_endpoint

    first, retry, other = asyncio.run(scenario())
    assert first[0] == 200 and retry == first  # answered 200 once reconnected; the retry is not a second send
    assert other[0] == 200 and other[1]["id"] != first[1]["id"]
    assert transport.sent == ["hello", "hello"]

    transport.connected = False
    quick = Outbox(store, transport, "27710000000@s.whatsapp.net", delivery_wait=0.05, dedupe_window=0)
    assert asyncio.run(quick.submit(request("hello"), None, None, "/send-message"))[0] == 202  # window off: new row


def test_a_restarted_outbox_keeps_to_the_pace_of_what_was_sent_before(store: Store) -> None:
    pace = PaceConfig(per_minute=1, chat_gap_s=0, chat_jitter_s=0, typing=False, ramp_s=0)
    transport = ScriptedTransport()
    first = Outbox(store, transport, "27710000000@s.whatsapp.net", delivery_wait=0, pacer=Pacer(pace))

    async def scenario() -> list[tuple[int, dict]]:
        answers = [await first.submit(request(text), None, f"k-{text}", "/api/send") for text in ("one", "two")]
        first.close()
        return answers

    (status_one, _), (status_two, queued) = asyncio.run(scenario())
    assert (status_one, status_two, queued["position"]) == (200, 202, 1)  # one a minute: "two" waits
    assert "Paced: queued" in queued["message"] and queued["expected_at"]

    restarted = Outbox(store, transport, "27710000000@s.whatsapp.net", delivery_wait=0, pacer=Pacer(pace))
    ((row, due),) = restarted.plan().order
    assert row.seq == 2 and due - restarted.pacer.now() > 50  # a restart does not start the minute over
    assert transport.sent == ["one"]
