"""Poison messages in a batch, on a real store file: the good ones stored, the bad ones sanitised or set aside
with their raw payload, nothing raised (so the transport acknowledges the batch)."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from bridge.quarantine import Quarantined
from bridge.schema import messages_after
from bridge.store import Store
from bridge.transport import IncomingMessage, MediaInfo
from tests.conftest import GROUP_A

AT = datetime(2026, 11, 24, 22, 31, 27, tzinfo=timezone.utc)


def msg(n: int, text: str = "DR1734150", **fields: object) -> IncomingMessage:
    return IncomingMessage(**{"id": f"M{n}", "chat_jid": GROUP_A, "sender_jid": "27710000001@s.whatsapp.net",
                              "text": text, "timestamp": AT, **fields})


def test_a_batch_with_poison_is_stored_and_the_poison_set_aside(tmp_path: Path) -> None:
    store = Store(tmp_path / "messages.db")
    told: list[Quarantined] = []
    store.on_set_aside = told.extend
    batch = [msg(1), msg(2, "bad \udfff DR1734151", chat_name="Lawley \ud800"),
             msg(3, timestamp=datetime(2026, 11, 24)),  # naive: cannot be placed in time
             msg(4, media=MediaInfo("image", "p\udcff.jpg", "", file_length=2**70)),  # cannot be bound
             msg(5)]
    assert store.add_messages(batch) == 3
    assert [(m.id, m.content, m.chat_name) for m in messages_after(store.conn, 0)] == [
        ("M1", "DR1734150", "Lawley \ufffd"), ("M2", "bad \ufffd DR1734151", "Lawley \ufffd"),
        ("M5", "DR1734150", "Lawley \ufffd")]
    assert [(q.message_id, q.action) for q in told] == [("M2", "sanitised"), ("M3", "quarantined"), ("M4", "quarantined")]
    assert "chat_name, text" in told[0].reason and "naive datetime" in told[1].reason and "out of range" in told[2].reason
    raw = {r[0]: json.loads(r[1]) for r in store.conn.execute("SELECT message_id, raw FROM quarantine")}
    assert raw["M2"]["text"] == "bad \udfff DR1734151" and raw["M4"]["media"]["file_length"] == 2**70
    assert store.quarantine_counts() == {"sanitised": 1, "quarantined": 2}
    assert store.add_messages([msg(6, text=""), msg(3, timestamp=datetime(2026, 11, 24))]) == 0  # a redelivery of the poison: set aside again, no error
