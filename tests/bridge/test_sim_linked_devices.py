"""Linked devices in the simulated WhatsApp (issue 21): a device is (phone, node); every device of a member
receives every group message; what one device sends reaches the group once and its siblings as from-me."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from bridge.simulator.state import SimState
from tests.bridge.test_simulator import Client, scenario
from tests.conftest import GROUP_A, Processes
from tests.sim_helpers import CONTRACTOR, MAIN_PHONE, SENDER_PHONE, TWO_SESSIONS_CONFIG, start_sim
from watchdog.components import load

MAIN_JID = f"{MAIN_PHONE}@s.whatsapp.net"


@pytest.fixture
def config_path(write_config: Callable[[str], Path]) -> Path:
    return write_config(TWO_SESSIONS_CONFIG)


def queued(state: SimState, phone: str, node: str) -> list[tuple[str, str, str]]:
    device = state.device(phone, node)
    return [(type(m).__name__, getattr(m, "sender_jid", ""), getattr(m, "text", m.id)) for _, m in device.after(0, 50)]


def test_every_device_receives_every_group_message_and_a_send_reaches_the_group_once(config_path: Path) -> None:
    state = SimState(load(config_path))
    a, b = state.device(MAIN_PHONE, "vps-a"), state.device(MAIN_PHONE, "vps-b")
    assert a is not b and state.device(MAIN_PHONE, "vps-a") is a  # a node links once, then is that device
    assert state.device("27719999999", "vps-a") is None  # no such number
    state.post(state.groups[GROUP_A], CONTRACTOR, "DR1000001 installed")
    for node in ("vps-a", "vps-b"):
        assert queued(state, MAIN_PHONE, node) == [("Message", CONTRACTOR, "DR1000001 installed")]
    sent = state.send(a, {"id": "3EB0FEEDBACK1", "recipient": GROUP_A, "text": "@27710000001 DR1000001 received",
                          "mentioned_jids": [CONTRACTOR]})
    again = state.send(b, {"id": "3EB0FEEDBACK1", "recipient": GROUP_A, "text": "@27710000001 DR1000001 received"})
    assert again is sent and (sent.session, sent.node) == (MAIN_PHONE, "vps-a")  # the same id: the same message
    assert (a.resent, b.resent) == (0, 1)  # counted as sent again by that device
    assert [m.id for m in state.groups[GROUP_A].history] == [state.groups[GROUP_A].history[0].id, "3EB0FEEDBACK1"]
    assert state.sent_by(None) == [sent.json()]
    # the sibling receives it from its own number (from me); the sender does not; both get its receipts
    assert ("Message", MAIN_JID, "@27710000001 DR1000001 received") in queued(state, MAIN_PHONE, "vps-b")
    assert ("Message", MAIN_JID, "@27710000001 DR1000001 received") not in queued(state, MAIN_PHONE, "vps-a")
    for node in ("vps-a", "vps-b"):
        assert [text for kind, _, text in queued(state, MAIN_PHONE, node) if kind == "SimReceipt"] == [
            f"delivered:3EB0FEEDBACK1:{CONTRACTOR}", "delivered:3EB0FEEDBACK1:27710000002@s.whatsapp.net"]
    # other members' devices get it once
    assert [text for _, _, text in queued(state, SENDER_PHONE, "")].count("@27710000001 DR1000001 received") == 1


@pytest.mark.slow
def test_sessions_lists_devices_with_their_connection_counts(procs: Processes, data_dir: Path) -> None:
    _, sim_url = start_sim(procs, data_dir)

    async def body(c: Client) -> None:
        a = await c.connect(hello={"type": "hello", "session": MAIN_PHONE, "node": "vps-a"})
        b = await c.connect(hello={"type": "hello", "session": MAIN_PHONE, "node": "vps-b"})
        assert (await a.frame())["node"] == "vps-a" and (await b.frame())["node"] == "vps-b"
        await c.api.inject("DR1000002 installed")
        assert [m["text"] for m in await a.messages(1)] == [m["text"] for m in await b.messages(1)] == [
            "DR1000002 installed"]
        reply = await a.request(type="send", id="3EB0FEEDBACK2", recipient=GROUP_A, text="DR1000002 received")
        assert reply["ok"]
        [echo] = await b.messages(1)
        assert (echo["id"], echo["sender_jid"]) == ("3EB0FEEDBACK2", MAIN_JID)  # from me, on the sibling
        status, sessions = await c.api.call("GET", "/sim/sessions")
        assert status == 200
        main = sessions[MAIN_PHONE]
        devices = {d["node"]: (d["connected"], d["connections"], d["stream_replaced"]) for d in main["devices"]}
        assert devices == {"": (False, 0, 0), "vps-a": (True, 1, 0), "vps-b": (True, 1, 0)}
        assert (main["connected"], main["connections"]) == (True, 2)
        a_again = await c.connect(hello={"type": "hello", "session": MAIN_PHONE, "node": "vps-a"})
        await a_again.frame()
        while (msg := await a.ws.receive(timeout=5)).type == aiohttp.WSMsgType.TEXT:  # receipts still in flight
            pass
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 4409)  # one connection per device: the older goes
        _, sessions = await c.api.call("GET", "/sim/sessions")
        devices = {d["node"]: (d["connections"], d["stream_replaced"]) for d in sessions[MAIN_PHONE]["devices"]}
        assert devices == {"": (0, 0), "vps-a": (2, 1), "vps-b": (1, 0)}  # vps-b untouched
        _, sent = await c.api.call("GET", "/sim/sent")
        assert [(s["id"], s["node"]) for s in sent] == [("3EB0FEEDBACK2", "vps-a")]
    scenario(sim_url, body)


@pytest.mark.slow
def test_a_temporary_ban_is_the_numbers_every_linked_device_is_told_and_closed(procs: Processes,
                                                                                data_dir: Path) -> None:
    _, sim_url = start_sim(procs, data_dir)

    async def body(c: Client) -> None:
        a = await c.connect(hello={"type": "hello", "session": MAIN_PHONE, "node": "vps-a"})
        b = await c.connect(hello={"type": "hello", "session": MAIN_PHONE, "node": "vps-b"})
        await a.frame(), await b.frame()
        status, _ = await c.api.call("POST", "/sim/limits", {"session": MAIN_PHONE, "per_minute": 1, "ban_after": 1,
                                                             "ban_s": 30, "ban_code": "BLOCKED_BY_USERS"})
        assert status == 200
        assert (await a.request(type="send", id="3EB0BAN1", recipient=GROUP_A, text="one"))["ok"]
        refused = await a.request(type="send", id="3EB0BAN2", recipient=GROUP_A, text="one too many")
        assert not refused["ok"] and "429" in str(refused)
        for device in (a, b):  # vps-b sent nothing and is banned all the same: the ban is the number's
            frames = await device.until("temporary_ban")
            assert frames[-1]["code"] == "BLOCKED_BY_USERS" and 0 < frames[-1]["expire_s"] <= 30
            while (msg := await device.ws.receive(timeout=5)).type == aiohttp.WSMsgType.TEXT:
                pass
            assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 4402)
    scenario(sim_url, body)


def test_a_keyed_sends_message_id_is_derived_from_its_key() -> None:
    """Two hosts' bridges sending the same feedback (same Idempotency-Key) choose the same message id."""
    from bridge.outbox_answers import new_message_id
    own = "27710000000@s.whatsapp.net"
    first = new_message_id(own, "key-DR1000001")
    assert first == new_message_id(own, "key-DR1000001")  # either host of the account: the same message
    assert first != new_message_id(own, "key-DR1000002")
    assert first != new_message_id("27710000009@s.whatsapp.net", "key-DR1000001")
    assert new_message_id(own, None) != new_message_id(own, None)  # without a key: random, as before
    assert all(len(i) == 22 and i.startswith("3EB0") for i in (first, new_message_id(own, None)))


@pytest.mark.slow
def test_a_withheld_device_s_send_reaches_the_group_and_its_siblings_but_not_its_answer(procs: Processes,
                                                                                       data_dir: Path) -> None:
    """`POST /sim/withhold`: WhatsApp took the send, its answer was lost (a cluster's send of unknown fate)."""
    _, sim_url = start_sim(procs, data_dir)

    async def body(c: Client) -> None:
        a = await c.connect(hello={"type": "hello", "session": MAIN_PHONE, "node": "vps-a"})
        b = await c.connect(hello={"type": "hello", "session": MAIN_PHONE, "node": "vps-b"})
        await a.frame()
        await b.frame()
        for bad in ({"session": MAIN_PHONE}, {"session": "999", "withhold": True}, ["x"],
                    {"session": MAIN_PHONE, "withhold": True, "drop": "yes"}):
            status, reply = await c.api.call("POST", "/sim/withhold", bad)
            assert status == 400 and ("withhold" in reply["error"] or "unknown session" in reply["error"]), reply
        assert await c.api.call("POST", "/sim/withhold", {"session": MAIN_PHONE, "node": "vps-a", "withhold": True}) \
            == (200, {"withheld": True})
        await a.ws.send_json({"req": 1, "type": "send", "id": "3EB0WITHHELD", "recipient": GROUP_A, "text": "DR1 ok"})
        [echo] = await b.messages(1)  # the sibling got it, from me
        assert (echo["id"], echo["sender_jid"]) == ("3EB0WITHHELD", MAIN_JID)
        _, sent = await c.api.call("GET", "/sim/sent")
        assert [(s["id"], s["node"]) for s in sent] == [("3EB0WITHHELD", "vps-a")]
        assert await c.api.call("POST", "/sim/withhold", {"session": MAIN_PHONE, "node": "vps-a", "withhold": False}) \
            == (200, {"withheld": False})
        reply = await a.request(type="send", id="3EB0WITHHELD", recipient=GROUP_A, text="DR1 ok")  # req 7
        assert reply["ok"] and reply["id"] == "3EB0WITHHELD"  # the first answer to reach it: req 1's never did
        _, sessions = await c.api.call("GET", "/sim/sessions")
        assert {d["node"]: d["resent"] for d in sessions[MAIN_PHONE]["devices"]}["vps-a"] == 1  # once in the group
    scenario(sim_url, body)
