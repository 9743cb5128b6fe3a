"""WhatsApp's own limits in the outbox, on a real store file: rate-overlimit pauses the account and the
message goes once the pause is over (the answered attempt not counted); a refusal for one contact fails that
message at once with WhatsApp's code and meaning; a temporary ban holds sending until its expiry."""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bridge import refusals
from bridge.outbox import Outbox
from bridge.send_pause import SendPause
from bridge.outbox_store import OutboxRow
from bridge.store import Store
from bridge.transport import OutgoingMessage, RateLimited, SendResult
from tests.bridge.test_outbox import ScriptedTransport, request
from tests.conftest import until
from watchdog.shared import clock

OWN = "27710000000@s.whatsapp.net"


class Limited(ScriptedTransport):
    """WhatsApp with its limits: the first `overlimit` sends answer 429; texts in `refused` get `code`."""

    def __init__(self, overlimit: int = 0, refused: dict[str, int] | None = None) -> None:
        super().__init__()
        self.overlimit = overlimit
        self.refused = refused or {}
        self.sent_at: list[float] = []

    async def send(self, message: OutgoingMessage) -> SendResult:
        self.tries.append(message.text)
        if message.text in self.refused:
            code = self.refused[message.text]
            raise refusals.classify(code, f"server returned error {code}")  # type: ignore[misc]
        if self.overlimit:
            self.overlimit -= 1
            raise refusals.classify(429, "server returned error 429")  # type: ignore[misc]
        self.sent.append(message.text)
        self.sent_at.append(time.monotonic())
        return SendResult(message.message_id, clock.now())


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "messages.db")


def test_rate_overlimit_pauses_the_account_and_the_queue_drains_by_itself_after(store: Store) -> None:
    transport = Limited(overlimit=2)
    outbox = Outbox(store, transport, OWN, delivery_wait=0, max_attempts=2, pause=SendPause(first=0.3))

    async def scenario() -> list[tuple[int, dict]]:
        answers = [await outbox.submit(request(text), None, f"k-{text}", "/api/send") for text in ("a", "b")]
        assert outbox.pause.remaining() > 0 and outbox.pause.strikes == 1
        snapshot = outbox.pause.snapshot()
        assert snapshot["paused"] and "rate-overlimit" in snapshot["reason"] and snapshot["until"]
        await until(lambda: transport.sent == ["a", "b"], timeout=10, message="the queue to drain after the pauses")
        return answers

    started = time.monotonic()
    answers = asyncio.run(scenario())
    assert [status for status, _ in answers] == [202, 202]
    assert "Sending paused (WhatsApp answered rate-overlimit (429)" in answers[0][1]["message"]
    assert transport.tries == ["a", "a", "a", "b"]  # nothing tried during a pause: one try per pause
    assert transport.sent_at[0] - started >= 0.3 + 0.6  # 0.3 s, then doubled: 0.6 s
    # Two 429s with max_attempts=2 and still sent: an answered rate-overlimit is not a lost attempt.
    assert store.outbox_depth() == 0 and store.outbox_dead_letters() == 0
    assert outbox.pause.strikes == 0 and outbox.pause.rate_limited_total == 2  # the backoff starts over


def test_a_contact_refusal_fails_that_message_with_the_reason_and_the_rest_go(store: Store) -> None:
    transport = Limited(refused={"to a cold contact": 463})
    dead: list[tuple[OutboxRow, str]] = []
    outbox = Outbox(store, transport, OWN, delivery_wait=0, on_dead_letter=lambda row, why: dead.append((row, why)))

    async def scenario() -> list[tuple[int, dict]]:
        return [await outbox.submit(request(text), None, f"k-{text}", "/api/send")
                for text in ("to a cold contact", "next")]

    (status, body), (next_status, _) = asyncio.run(scenario())
    assert (status, next_status) == (422, 200) and transport.tries == ["to a cold contact", "next"]  # tried once
    assert "WhatsApp refused the message (error 463: refused for this contact" in body["message"]
    assert len(dead) == 1 and "463" in dead[0][1]
    # Asking again (same key) answers the same refusal; it is not sent again.
    again = asyncio.run(outbox.submit(request("to a cold contact"), None, "k-to a cold contact", "/api/send"))
    assert again[0] == 422 and "error 463" in again[1]["message"] and transport.tries.count("to a cold contact") == 1


def test_a_temporary_ban_holds_sending_until_it_expires_and_reconnecting_lifts_it(fixed_clock) -> None:
    fixed_clock(datetime(2026, 11, 24, 22, 31, 27, tzinfo=timezone.utc))
    pause = SendPause(first=30)
    pause.banned(clock.now() + timedelta(seconds=3600), "temporary ban by WhatsApp (SEND_TO_TOO_MANY_PEOPLE)")
    assert 3590 < pause.remaining() <= 3600
    snapshot = pause.snapshot()
    assert snapshot["paused"] and "SEND_TO_TOO_MANY_PEOPLE" in snapshot["reason"]
    assert snapshot["until"].startswith("2026-11-24T23:31:2")  # an hour from the (fixed) time of day
    pause.rate_limited("WhatsApp answered rate-overlimit (429)")
    assert "SEND_TO_TOO_MANY_PEOPLE" in pause.reason  # the longer hold is the one shown
    pause.lifted()
    assert 0 < pause.remaining() <= 30 and "rate-overlimit" in pause.reason  # a 429 pause still runs out


@pytest.mark.parametrize("text, code", [("server returned error 463", 463), ("info query returned 429: rate-overlimit",
                                                                              429), ("websocket not connected", None)])
def test_whatsmeows_error_texts_carry_the_code(text: str, code: int | None) -> None:
    assert refusals.server_code(text) == code
    assert isinstance(refusals.classify(refusals.server_code("server returned error 429"), ""), RateLimited)
