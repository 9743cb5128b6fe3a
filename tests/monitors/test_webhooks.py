"""Webhook delivery against a real aiohttp receiver on 127.0.0.1 that verifies Standard Webhooks signatures
with the reference library, is down for a while, answers 500 and 429, and counts each event once by id.

The outbox here is the deliverer's protocol over a list; the process tests (test_drops_api.py) run the
same deliverer on the drops store's own outbox."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from monitors.api import signing
from monitors.api.webhooks import SAFETY_INTERVAL, Deliverer, WokenSchedule, classify
from scripts.benchmarks.webhook_receiver import WebhookReceiver
from tests.conftest import until
from tests.pg import free_port
from monitors.config import WebhookConfig

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


@dataclass
class Event:
    seq: int
    id: str
    type: str
    created_at: str
    payload: str
    attempts: int = 0


@dataclass
class MemoryOutbox:
    """The outbox protocol over a dict (the store's own outbox is tested by its owner with both backends)."""

    events: list[Event]
    state: dict[int, str] = field(default_factory=dict)  # seq -> delivered | dead
    next_at: dict[int, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    started: list[tuple[str, str]] = field(default_factory=list)
    down_for_starts: int = 0  # `start` fails this many times (a store down when drops-api starts)
    looked_before_start: bool = False

    def start(self, webhook, start_at):
        if self.down_for_starts:
            self.down_for_starts -= 1
            raise ConnectionError("store down")
        self.started.append((webhook, start_at))

    def due(self, webhook, types, now, limit=100):
        self.looked_before_start |= not self.started
        due = [e for e in self.events if e.seq not in self.state and e.type in types and self.next_at.get(e.seq, "") <= now]
        return [Event(**e.__dict__) for e in due[:limit]]

    def next_retry(self, webhook, after):
        return min((at for seq, at in self.next_at.items() if seq not in self.state and at > after), default=None)

    def reschedule(self, webhook, now, later_than):
        moved = [seq for seq, at in self.next_at.items() if seq not in self.state and at > later_than]
        self.next_at.update(dict.fromkeys(moved, now))
        return len(moved)

    def _attempt(self, seq):
        next(e for e in self.events if e.seq == seq).attempts += 1

    def delivered(self, webhook, seq):
        self._attempt(seq)
        self.state[seq] = "delivered"

    def failed(self, webhook, seq, error, next_attempt_at):
        self._attempt(seq)
        self.errors.append(error)
        self.next_at[seq] = next_attempt_at

    def dead(self, webhook, seq, error):
        self._attempt(seq)
        self.errors.append(error)
        self.state[seq] = "dead"


def events(count: int, kind: str = "drop.recorded") -> list[Event]:
    return [Event(n, f"evt_{n:04d}", kind, "2026-11-24 22:31:27.000000+00:00",
                  json.dumps({"type": kind, "timestamp": "2026-11-24T22:31:27+00:00", "data": {"n": n}}))
            for n in range(1, count + 1)]


def hook(port: int, **overrides: object) -> WebhookConfig:
    values = dict(name="crm", url=f"http://127.0.0.1:{port}/hook", secret=SECRET, max_attempts=30,
                  backoff_initial=0.02, backoff_max=0.2, timeout=2.0)
    return WebhookConfig(**{**values, **overrides})


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver(SECRET)
    yield server
    server.close()


async def delivering(outbox: MemoryOutbox, hooks: list[WebhookConfig], dead: list[tuple[str, str]], body) -> None:
    """Run a Deliverer while `body` runs; nothing but its own attempts and retries wakes it (the events are there)."""
    async with aiohttp.ClientSession() as http:
        deliverer = Deliverer(hooks, outbox, http, lambda h, event_id, summary: dead.append((h.name, event_id)))
        task = asyncio.create_task(deliverer.run(WokenSchedule()))
        try:
            await body(deliverer)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def test_delivered_once_each_through_an_outage_then_500_and_429_signed_with_a_stable_id(
        receiver: WebhookReceiver) -> None:
    port = free_port()
    receiver.script = [500, 500, 429, 429, 500]
    outbox = MemoryOutbox(events(6))
    dead: list[tuple[str, str]] = []

    async def body(deliverer: Deliverer) -> None:
        await until(lambda: len(outbox.errors) >= 6, message="attempts against a receiver that is down")
        assert all("ClientConnectorError" in e for e in outbox.errors)
        await asyncio.to_thread(receiver.start, port)
        await until(lambda: len(outbox.state) == 6, message="every event delivered")
        assert set(outbox.state.values()) == {"delivered"}
        assert deliverer.stats()["crm"].delivered == 6

    asyncio.run(delivering(outbox, [hook(port)], dead, body))
    assert receiver.bad_signatures == 0
    assert receiver.accepted() == {f"evt_{n:04d}": 1 for n in range(1, 7)}  # each exactly once by id
    statuses = [r.status for r in receiver.requests]
    assert statuses.count(500) == 3 and statuses.count(429) == 2
    retried = {r.event_id for r in receiver.requests if r.status != 200}
    assert retried and all(receiver.accepted()[event_id] == 1 for event_id in retried)  # the retry had the same id
    for event_id in retried:  # each retry when its backoff (at most 0.2 s) fell due, not at the next safety look
        times = [r.at for r in receiver.requests if r.event_id == event_id]
        assert max(b - a for a, b in zip(times, times[1:])) < SAFETY_INTERVAL * 0.7, times
    assert dead == []


def test_a_final_4xx_is_dead_at_once_and_attempts_run_out_to_dead(receiver: WebhookReceiver) -> None:
    receiver.script = [404, 500, 500, 500]
    port = free_port()
    receiver.start(port)
    outbox = MemoryOutbox(events(2))
    dead: list[tuple[str, str]] = []

    async def body(deliverer: Deliverer) -> None:
        await until(lambda: len(outbox.state) == 2, message="both events finished")

    asyncio.run(delivering(outbox, [hook(port, max_attempts=3)], dead, body))
    assert outbox.state == {1: "dead", 2: "dead"}
    first = receiver.requests[0].event_id
    assert [r.status for r in receiver.requests if r.event_id == first] == [404]  # refused: never retried
    other = "evt_0002" if first == "evt_0001" else "evt_0001"
    assert [r.status for r in receiver.requests if r.event_id == other] == [500, 500, 500]  # max_attempts = 3
    assert sorted(dead) == [("crm", "evt_0001"), ("crm", "evt_0002")]
    assert any(e.startswith("refused, last: HTTP 404") for e in outbox.errors)
    assert any(e.startswith("3 attempts failed, last: HTTP 500") for e in outbox.errors)


def test_a_refused_signature_is_retried_until_the_clocks_agree_not_dead_at_once(receiver: WebhookReceiver) -> None:
    """400/401/403: what a receiver answers when its Standard Webhooks library rejects the signature, as it does
    for a timestamp more than 5 minutes off its clock (the sender's stepped an hour, or the receiver's). They were
    final: every event dead at the first attempt. Retried, the attempt after the clocks agree is delivered."""
    receiver.script = [401, 403, 400]
    port = free_port()
    receiver.start(port)
    outbox = MemoryOutbox(events(1))
    dead: list[tuple[str, str]] = []

    async def body(deliverer: Deliverer) -> None:
        await until(lambda: len(outbox.state) == 1, message="the event finished")

    asyncio.run(delivering(outbox, [hook(port, max_attempts=5)], dead, body))
    assert outbox.state == {1: "delivered"} and dead == []
    assert [r.status for r in receiver.requests] == [401, 403, 400, 200]


def test_only_the_receivers_events_and_what_is_final() -> None:
    assert classify(204, None).delivered
    assert classify(404, None).final and classify(410, None).final and classify(422, None).final
    assert not classify(408, None).final and not classify(429, "7").final and classify(429, "7").retry_after == 7
    assert not classify(500, None).final and not classify(301, None).final
    headers = signing.headers(signing.secret_key(SECRET), "evt_1", int(time.time()), b'{"a":1}')
    assert Webhook(SECRET).verify(b'{"a":1}', headers) == {"a": 1}
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(b'{"a":2}', headers)


def test_a_receiver_gets_only_the_event_types_it_asked_for(receiver: WebhookReceiver) -> None:
    port = free_port()
    receiver.start(port)
    outbox = MemoryOutbox(events(2) + [Event(3, "evt_read", "feedback.read", "2026-11-24 22:31:27.000000+00:00", "{}")])

    async def body(deliverer: Deliverer) -> None:
        await until(lambda: 3 in outbox.state, message="the read event delivered")

    asyncio.run(delivering(outbox, [hook(port, events=["feedback.read"])], [], body))
    assert list(receiver.accepted()) == ["evt_read"]


def test_a_receiver_is_placed_in_the_event_stream_before_anything_is_sent_even_if_the_store_was_down(
        receiver: WebhookReceiver) -> None:
    port = free_port()
    receiver.start(port)
    outbox = MemoryOutbox(events(2), down_for_starts=2)

    async def run() -> None:
        async with aiohttp.ClientSession() as http:
            deliverer = Deliverer([hook(port, start_at="oldest")], outbox, http, lambda *a: None)
            assert not deliverer.start_receivers() and deliverer.store_error == "ConnectionError: store down"
            task = asyncio.create_task(deliverer.run(WokenSchedule()))  # tries again at each (safety) look
            try:
                await until(lambda: len(outbox.state) == 2, message="both events delivered once the store answered")
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    asyncio.run(run())
    assert outbox.started == [("crm", "oldest")] and not outbox.looked_before_start
