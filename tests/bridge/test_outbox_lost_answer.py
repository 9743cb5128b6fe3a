"""A send whose answer was lost (issue 21): handed to WhatsApp, then the connection dropped or nothing answered.

Where the transport chooses message ids (the simulator) the row stays pending and goes again with the same id: one
message. Where it cannot (neonize: the id is WhatsApp's), a resend would be a second message, so a fenced row (a
cluster) is in doubt: never sent again by the bridge, answered 409 `doubt` to a re-post of its key and listed in the
fence word's answer (the monitors find out whether it went, monitors/fate.py). An unfenced row (one host) keeps the
documented at-least-once. On a real store file.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bridge.fence import FenceWord, SendFence
from bridge.outbox import Outbox
from bridge.store import Store
from bridge.transport import AnswerLost, Capabilities, OutgoingMessage, Receipt, ReceiptKind, SendResult
from tests.bridge.test_outbox import ScriptedTransport, request
from tests.bridge.test_outbox_fence import MAIN, fenced_outbox
from watchdog.shared import clock


class LosingTransport(ScriptedTransport):
    """WhatsApp takes the `lose` texts but their answers are lost (AnswerLost) while `losing`; `chooses_ids` as
    the simulator (True) or neonize (False)."""

    def __init__(self, chooses_ids: bool, lose: tuple[str, ...]) -> None:
        super().__init__()
        self.capabilities = Capabilities(history_request=False, chooses_ids=chooses_ids)
        self.lose = lose
        self.losing = True

    async def send(self, message: OutgoingMessage) -> SendResult:
        if self.losing and message.text in self.lose:
            self.tries.append(message.text)
            self.sent.append(message.text)  # in the chat: only the answer is lost
            raise AnswerLost("connection ended before the reply")
        return await super().send(message)


def lost_once(tmp_path: Path, chooses_ids: bool, fence: SendFence | None) -> tuple[Store, LosingTransport,
                                                                                      dict[str, tuple[int, dict]]]:
    """DR1's answer is lost, then the connection is back and DR2 is posted behind it; DR1 is posted again by key."""
    store, transport = Store(tmp_path / "messages.db"), LosingTransport(chooses_ids, ("DR1",))
    outbox, now = fenced_outbox(store, transport)

    async def scenario() -> dict[str, tuple[int, dict]]:
        if fence is not None:
            outbox.fence_word(FenceWord(fence, now.now + 60))
        answers = {"first": await outbox.submit(request("DR1"), None, "k1", "/api/send", fence)}
        transport.losing = False
        answers["next"] = await outbox.submit(request("DR2"), None, "k2", "/api/send", fence)
        await outbox.drain()
        answers["again"] = await outbox.submit(request("DR1"), None, "k1", "/api/send", fence)
        if fence is not None:
            answers["word"] = (200, outbox.fence_word(FenceWord(fence, now.now + 60)))
        return answers

    return store, transport, asyncio.run(scenario())


@pytest.mark.parametrize("fence", [None, SendFence(MAIN, 3)], ids=["unfenced", "fenced"])
def test_where_the_sender_chooses_ids_a_lost_answer_is_sent_again_with_the_same_id(tmp_path: Path,
                                                                                  fence: SendFence | None) -> None:
    store, transport, answers = lost_once(tmp_path, chooses_ids=True, fence=fence)
    assert answers["first"][0] == 202  # stays queued
    assert answers["again"][0] == 200 and answers["again"][1]["id"] == answers["first"][1]["id"]
    assert transport.tries == ["DR1", "DR1", "DR2"]  # sent again first: its chat keeps its order
    assert store.outbox_by_key("k1").status == "sent"  # type: ignore[union-attr]
    if fence is not None:
        assert answers["word"][1]["doubt"] == []


def test_where_ids_are_whatsapps_a_fenced_lost_answer_is_in_doubt_and_never_sent_again(tmp_path: Path) -> None:
    store, transport, answers = lost_once(tmp_path, chooses_ids=False, fence=SendFence(MAIN, 3))
    status, body = answers["first"]
    assert status == 409 and body["doubt"] is True and "answer was lost" in body["message"]
    assert answers["again"] == (409, body)  # a re-post of its key: the same answer, nothing sent
    assert answers["next"][0] == 200  # the rows behind it drain
    assert transport.tries == ["DR1", "DR2"]  # DR1 handed over once, never again
    row = store.outbox_by_key("k1")
    assert row is not None and row.status == "doubt" and store.outbox_depth() == 0
    assert answers["word"][1]["doubt"] == [row.message_id]  # the keeper hears it at every word
    assert answers["word"][1]["withdrawn"] == []


def test_where_ids_are_whatsapps_an_unfenced_lost_answer_stays_at_least_once(tmp_path: Path) -> None:
    """One host (no fence): nothing else could find out, so the documented at-least-once stays (docs/NEONIZE.md)."""
    store, transport, answers = lost_once(tmp_path, chooses_ids=False, fence=None)
    assert answers["first"][0] == 202 and answers["again"][0] == 200
    assert transport.tries.count("DR1") == 2 and store.outbox_by_key("k1").status == "sent"  # type: ignore[union-attr]


def test_a_row_in_doubt_is_not_withdrawn_and_a_fenced_timeout_is_a_lost_answer(tmp_path: Path) -> None:
    """A withdraw (a failover, a rejoin) must not take back what may be in the chat; a send that never answers
    within send_timeout was handed over too."""
    store = Store(tmp_path / "messages.db")
    transport = LosingTransport(chooses_ids=False, lose=())

    async def never(message: OutgoingMessage) -> SendResult:
        transport.tries.append(message.text)
        await asyncio.sleep(30)
        raise AssertionError("not reached")

    transport.send = never  # type: ignore[method-assign]
    outbox = Outbox(store, transport, "27710000000@s.whatsapp.net", send_timeout=0.05, delivery_wait=0,
                    fences=fenced_outbox(store, transport)[0].fences)
    fence = SendFence(MAIN, 4)

    async def scenario() -> tuple[tuple[int, dict], dict[str, str]]:
        outbox.fence_word(FenceWord(fence, outbox.fences.now() + 60))
        answer = await outbox.submit(request("DR9"), None, "k9", "/api/send", fence)
        return answer, outbox.withdraw(("k9",), "a failover")

    (status, body), states = asyncio.run(scenario())
    assert status == 409 and body["doubt"] is True and "no answer within 0.05 s" in body["message"]
    assert states == {"k9": "doubt"} and transport.tries == ["DR9"]


def test_a_send_whose_id_whatsapp_chose_has_its_receipts_also_under_the_id_its_client_was_answered(
        tmp_path: Path) -> None:
    """A 202 (queued) tells the client the bridge's id; where the transport cannot choose ids, WhatsApp's differs:
    the server ack the bridge records, and the delivered and read receipts WhatsApp sends for its id, are kept
    under both, so the client's record is seen sent, delivered and read."""
    store = Store(tmp_path / "messages.db")
    transport = LosingTransport(chooses_ids=False, lose=())

    async def theirs(message: OutgoingMessage) -> SendResult:
        transport.sent.append(message.text)
        return SendResult("3EB0WHATSAPPS", clock.now())

    transport.send = theirs  # type: ignore[method-assign]
    outbox = Outbox(store, transport, "27710000000@s.whatsapp.net", delivery_wait=0)
    status, body = asyncio.run(outbox.submit(request("DR5"), None, "k5", "/api/send"))
    assert status == 200 and body["id"] != "3EB0WHATSAPPS"
    acks = store.conn.execute("SELECT message_id FROM receipts WHERE kind = 'server_ack' ORDER BY message_id")
    assert sorted(r[0] for r in acks) == sorted(["3EB0WHATSAPPS", body["id"]])
    assert store.conn.execute("SELECT id FROM messages").fetchall() == [("3EB0WHATSAPPS",)]  # the message is WhatsApp's
    # its delivered and read receipts name WhatsApp's id: kept under the client's too
    store.add_receipts([Receipt(("3EB0WHATSAPPS",), "27710000001@s.whatsapp.net", "27710000002@s.whatsapp.net",
                                ReceiptKind.READ, clock.now())])
    reads = store.conn.execute("SELECT message_id FROM receipts WHERE kind = 'read'").fetchall()
    assert sorted(r[0] for r in reads) == sorted(["3EB0WHATSAPPS", body["id"]])
