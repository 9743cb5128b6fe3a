"""Delivery and read receipts: neonize's real protobuf receipts, the store's `receipts` table, and the
simulator delivering them (at once, read on POST /sim/read, queued while the bridge is away)."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
from neonize.proto import Neonize_pb2 as nz

from bridge.store import Store, receipts_after
from bridge.transport import IncomingMessage, Receipt, ReceiptKind, Source
from bridge.transports import neonize_mapping as mapping
from tests.bridge_support import PHONE, SENDER, call, rows, start_bridge, start_sim
from tests.conftest import GROUP_A, Processes, wait_until

AT = datetime(2026, 11, 24, 22, 31, 27, tzinfo=timezone.utc)
OTHER = "27710000002@s.whatsapp.net"


def jid(text: str, device: int = 0) -> nz.JID:
    user, _, server = text.partition("@")
    return nz.JID(User=user, Server=server, Device=device, RawAgent=0, Integrator=0, IsEmpty=False)


def receipt_event(kind: int, ids: list[str], sender: str = SENDER, sender_alt: str = "", from_me: bool = False,
                  chat: str = GROUP_A) -> nz.Receipt:
    """A receipt as whatsmeow fills it: Sender is the participant (device-suffixed), Timestamp in ms."""
    source = nz.MessageSource(Chat=jid(chat), Sender=jid(sender, device=3), IsFromMe=from_me, IsGroup=True,
                              AddressingMode=nz.AddressingMode.LID if sender_alt else nz.AddressingMode.PN)
    if sender_alt:
        source.SenderAlt.CopyFrom(jid(sender_alt))
    return nz.Receipt(MessageSource=source, MessageIDs=ids, Timestamp=int(AT.timestamp() * 1000), Type=kind)


def test_neonize_receipts_map_to_delivered_read_played_and_skip_the_rest(tmp_path: Path) -> None:
    types = nz.Receipt.ReceiptType
    delivered = mapping.receipt(receipt_event(types.DELIVERED, ["3EB0F1", "3EB0F2"]))
    assert delivered == Receipt(("3EB0F1", "3EB0F2"), GROUP_A, SENDER, ReceiptKind.DELIVERED, AT)
    lid_read = mapping.receipt(receipt_event(types.READ, ["3EB0F1"], sender="98765432101234@lid", sender_alt=SENDER))
    assert lid_read == Receipt(("3EB0F1",), GROUP_A, SENDER, ReceiptKind.READ, AT)  # the number, not the LID
    assert mapping.receipt(receipt_event(types.PLAYED, ["3EB0F3"])).kind == ReceiptKind.PLAYED
    for other in (types.READ_SELF, types.PLAYED_SELF, types.SENDER, types.RETRY, types.SERVER_ERROR, types.INACTIVE):
        assert mapping.receipt(receipt_event(other, ["3EB0F1"])) is None, types.Name(other)
    assert mapping.receipt(receipt_event(types.READ, ["3EB0F1"], from_me=True)) is None  # our own phone read it

    store = Store(tmp_path / "messages.db")
    assert store.add_receipts([delivered, lid_read]) == 3
    assert store.add_receipts([delivered]) == 0  # WhatsApp repeats receipts; one row each
    got = receipts_after(store.conn, 0)
    assert [(r.message_id, r.recipient_jid, r.kind) for r in got] == [
        ("3EB0F1", SENDER, "delivered"), ("3EB0F2", SENDER, "delivered"), ("3EB0F1", SENDER, "read")]
    assert receipts_after(store.conn, got[1].rowid) == got[2:]
    assert got[0].at == "2026-11-24 22:31:27.000000+00:00"


def test_a_finished_send_records_the_server_ack(tmp_path: Path) -> None:
    store = Store(tmp_path / "messages.db")
    row = store.outbox_add("3EB0AA", "key-1", GROUP_A, GROUP_A, "@27710000001 DR1 received", [SENDER], None, None)
    store.outbox_sent(row, IncomingMessage("3EB0AA", GROUP_A, f"{PHONE}@s.whatsapp.net", "@27710000001 DR1 received",
                                           AT, Source.SENT, True))
    assert [(r.message_id, r.kind, r.recipient_jid, r.at) for r in receipts_after(store.conn, 0)] == [
        ("3EB0AA", "server_ack", "", "2026-11-24 22:31:27.000000+00:00")]


def receipts(data_dir: Path, message_id: str) -> set[tuple[str, str]]:
    return set(rows(data_dir, "SELECT recipient_jid, kind FROM receipts WHERE message_id = ?", message_id))


@pytest.mark.slow
def test_sim_delivers_at_once_reads_on_request_and_queues_receipts_while_the_bridge_is_away(
        procs: Processes, data_dir: Path) -> None:
    _, sim = start_sim(procs, data_dir)
    bridge, url = start_bridge(procs, data_dir)
    status, body = call("POST", f"{url}/api/send", {"recipient": GROUP_A, "message": "DR1734150 - fix the pole",
                                                    "mentions": [SENDER]})
    assert status == 200, body
    sent_id = body["id"]
    # Delivered at once by both participants of the group; the server ack from the bridge itself.
    wait_until(lambda: receipts(data_dir, sent_id) == {("", "server_ack"), (SENDER, "delivered"),
                                                       (OTHER, "delivered")}, message="delivered receipts")
    assert call("POST", f"{sim}/sim/read", {"id": sent_id, "reader": SENDER}) == (200, {"receipts": 1})
    wait_until(lambda: (SENDER, "read") in receipts(data_dir, sent_id), message="the contractor's read receipt")
    assert (OTHER, "read") not in receipts(data_dir, sent_id)

    bridge.terminate()
    bridge.wait(timeout=10)
    assert call("POST", f"{sim}/sim/read", {"id": sent_id}) == (200, {"receipts": 2})  # everyone, while away
    start_bridge(procs, data_dir)
    wait_until(lambda: (OTHER, "read") in receipts(data_dir, sent_id), message="the queued read receipt")
    assert len(rows(data_dir, "SELECT * FROM receipts WHERE message_id = ?", sent_id)) == 5  # nothing twice

    assert call("POST", f"{sim}/sim/read", {"id": "nope"})[0] == 400
    status, body = call("POST", f"{sim}/sim/read", {"id": sent_id, "reader": "27719999999@s.whatsapp.net"})
    assert status == 400 and "did not receive" in body["error"]
