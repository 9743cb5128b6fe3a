"""The verygoodplugins whatsapp-mcp fork's contract, end to end: the real bridge and simulator answer its
requests (its client's exact bodies) in its shapes, and its list_messages query reads quoted_message_id from
our store."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.bridge_support import SENDER, call, inject, rows, sent, start_bridge, start_sim
from tests.conftest import GROUP_A, Processes, wait_until

# whatsapp-mcp-server/whatsapp.py (list_messages) of the fork, verbatim.
FORK_QUERY = ("SELECT messages.timestamp, messages.sender, chats.name, messages.content, messages.is_from_me, chats.jid, "
              "messages.id, messages.media_type, messages.quoted_message_id, messages.filename FROM messages "
              "JOIN chats ON messages.chat_jid = chats.jid WHERE messages.id = ?")


def interactions(sim: str) -> dict:
    return call("GET", f"{sim}/sim/interactions")[1]  # type: ignore[return-value]


@pytest.mark.slow
def test_the_forks_client_reacts_replies_marks_read_and_types_against_our_bridge(procs: Processes,
                                                                                data_dir: Path) -> None:
    _, sim = start_sim(procs, data_dir)
    _, url = start_bridge(procs, data_dir)
    drop = inject(sim, "DR1734150 installed", GROUP_A)["id"]
    wait_until(lambda: rows(data_dir, "SELECT 1 FROM messages WHERE id = ?", drop), message="the drop stored")

    # send_reaction(recipient, message_id, emoji, from_me=False, sender_jid=...): the fork's body, its answer.
    status, body = call("POST", f"{url}/api/react", {"recipient": GROUP_A, "message_id": drop, "emoji": "✅",
                                                     "from_me": False, "sender_jid": SENDER})
    assert status == 200 and body["ok"] is True, body
    (reaction,) = interactions(sim)["reactions"]
    assert (reaction["chat_jid"], reaction["message_id"], reaction["sender_jid"], reaction["emoji"]) == (
        GROUP_A, drop, SENDER, "✅")
    assert sent(sim) == [] and not rows(data_dir, "SELECT 1 FROM messages WHERE id = ?", body["id"])  # no message
    status, body = call("POST", f"{url}/api/react", {"recipient": GROUP_A, "message_id": drop, "emoji": "✅",
                                                     "from_me": False, "sender_jid": ""})
    assert status == 400 and "sender_jid is required for group reactions" in body["message"]

    # send_message(recipient, message, quoted_message_id, quoted_sender_jid, quoted_content, mentions).
    status, body = call("POST", f"{url}/api/send", {
        "recipient": GROUP_A, "message": "@27710000001 DR1734150 approved", "quoted_message_id": drop,
        "quoted_sender_jid": SENDER, "quoted_content": "DR1734150 installed", "mentions": ["27710000001"]})
    assert status == 200 and body["success"] is True, body
    (reply,) = sent(sim)
    assert reply["quote"] == {"message_id": drop, "sender_jid": SENDER, "text": "DR1734150 installed"}
    assert reply["mentioned_jids"] == [SENDER]
    (stored,) = rows(data_dir, FORK_QUERY, body["id"])
    assert stored[3] == "@27710000001 DR1734150 approved" and stored[4] == 1 and stored[8] == drop

    # A contractor replies to our feedback: the reply's quoted id is stored for the fork to read.
    status, posted = call("POST", f"{sim}/sim/inject", {"chat_jid": GROUP_A, "sender_jid": SENDER,
                                                         "text": "DR1734150 fixed", "quoted_message_id": body["id"]})
    assert status == 200, posted
    answer = posted["id"]
    wait_until(lambda: rows(data_dir, FORK_QUERY, answer), message="the contractor's reply stored")
    assert rows(data_dir, FORK_QUERY, answer)[0][8] == body["id"]
    assert rows(data_dir, FORK_QUERY, drop)[0][8] is None  # not a reply: NULL, as the fork stores it

    # mark_messages_read(message_ids, chat_jid, sender_jid) and the typing indicator.
    assert call("POST", f"{url}/api/mark-read", {"message_ids": [drop, answer], "chat_jid": GROUP_A,
                                                 "sender_jid": SENDER}) == (
        200, {"success": True, "message": "Messages marked as read"})
    assert call("POST", f"{url}/api/mark-read", {"message_ids": [drop], "chat_jid": GROUP_A})[0] == 400
    assert call("POST", f"{url}/api/typing", {"recipient": GROUP_A, "is_typing": True}) == (
        200, {"success": True, "message": "Typing indicator set to true"})
    seen = interactions(sim)
    assert [(r["chat_jid"], r["sender_jid"], r["message_ids"]) for r in seen["reads"]] == [
        (GROUP_A, SENDER, [drop, answer])]
    assert [(p["chat_jid"], p["composing"]) for p in seen["presences"]] == [(GROUP_A, True)]
