"""The simulated WhatsApp service as a real process, driven over its control API and raw websocket frames
(plus one in-process check of the delivery order that a process cannot time deterministically)."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import random
import re
import signal
import socket
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from bridge.simulator.connection import Connection
from bridge.simulator.service import Sim
from bridge.simulator.state import SimState
from bridge.simulator.traffic import demo_text
from tests.conftest import BASE_CONFIG, GROUP_A, GROUP_B, GROUP_C, Processes, until, wait_until
from tests.sim_helpers import CONTRACTOR, MAIN_PHONE, SENDER_PHONE, TWO_SESSIONS_CONFIG, SimAPI, start_sim
from watchdog.shared import clock, endpoints
from watchdog.components import load


@pytest.fixture
def config_path(write_config: Callable[[str], Path]) -> Path:
    return write_config(TWO_SESSIONS_CONFIG)


@pytest.fixture
def sim_url(procs: Processes, data_dir: Path) -> str:
    return start_sim(procs, data_dir)[1]


class Socket:
    """A raw session websocket, to check the frames themselves."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def frame(self) -> dict:
        msg = await self.ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
        return json.loads(msg.data)

    async def until(self, kind: str) -> list[dict]:
        """Frames up to and including the first of type `kind`."""
        frames = [await self.frame()]
        while frames[-1]["type"] != kind:
            frames.append(await self.frame())
        return frames

    async def messages(self, count: int) -> list[dict]:
        """The next `count` messages (live or offline), skipping other frames."""
        found: list[dict] = []
        while len(found) < count:
            frame = await self.frame()
            found += frame.get("messages", [])
        return found

    async def closed(self) -> tuple[int, str]:
        msg = await self.ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE, (msg.type, msg.data)
        return msg.data, msg.extra

    async def request(self, **frame: object) -> dict:
        await self.ws.send_json({"req": 7, **frame})
        while (reply := await self.frame())["type"] != "result":
            pass
        assert reply["req"] == 7
        return reply

    async def ack(self, ids: list[str]) -> None:
        await self.ws.send_json({"type": "ack", "ids": ids})


class Client:
    def __init__(self, http: aiohttp.ClientSession, sim_url: str) -> None:
        self.http = http
        self.api = SimAPI(http, sim_url)
        self.ws_url = sim_url.replace("http://", "ws://") + "/ws"

    async def connect(self, phone: str = MAIN_PHONE, hello: dict | None = None) -> Socket:
        ws = await self.http.ws_connect(self.ws_url)
        await ws.send_json(hello or {"type": "hello", "session": phone})
        return Socket(ws)


def scenario(sim_url: str, body: Callable[[Client], object]) -> None:
    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            await body(Client(http, sim_url))
    asyncio.run(main())


@pytest.mark.slow
def test_inject_rejects_bad_input_with_a_clear_message(sim_url: str) -> None:
    async def body(c: Client) -> None:
        cases = [
            ({"chat_jid": "120363000000000099@g.us", "sender_jid": CONTRACTOR, "text": "x"}, "unknown group"),
            ({"chat_jid": "not-a-jid", "sender_jid": CONTRACTOR, "text": "x"}, "not a group JID"),
            ({"chat_jid": GROUP_A, "sender_jid": "27710000001", "text": "x"}, "sender_jid: not a user JID"),
            ({"chat_jid": GROUP_A, "sender_jid": CONTRACTOR}, "text: missing"),
            ({"chat_jid": GROUP_A, "sender_jid": CONTRACTOR, "text": 5}, "text: missing"),
            ({"chat_jid": GROUP_A, "sender_jid": CONTRACTOR, "text": "x", "media": {"type": "gif"}}, "media.type"),
            (["not", "an", "object"], "expected a JSON object"),
        ]
        for payload, problem in cases:
            status, reply = await c.api.call("POST", "/sim/inject", payload)
            assert status == 400 and problem in reply["error"], (payload, reply)
        async with c.http.post(c.api.base + "/sim/inject", data=b"{oops") as response:
            assert response.status == 400 and "not valid JSON" in (await response.json())["error"]
        status, reply = await c.api.call("GET", "/sim/messages", chat_jid=GROUP_A, since="yesterday")
        assert status == 400 and "since: not an ISO-8601 time" in reply["error"]
        status, reply = await c.api.call("POST", "/sim/disconnect", {"session": "999"})
        assert status == 400 and "unknown session" in reply["error"]
        good = {"chat_jid": GROUP_A, "sender_jid": CONTRACTOR, "text": "DR1000001"}
        status, reply = await c.api.call("POST", "/sim/inject", [good, {**good, "chat_jid": GROUP_B, "text": None}])
        assert status == 400 and reply["error"].startswith("[1] text: missing")
        status, history = await c.api.call("GET", "/sim/messages", chat_jid=GROUP_A)
        assert status == 200 and history == []  # nothing was posted by the bad requests, not even a list's good part

        ok = await c.api.inject("DR1234567 installed")
        assert datetime.fromisoformat(ok["timestamp"]).utcoffset().total_seconds() == 0 and ok["id"]
        status, bulk = await c.api.call("POST", "/sim/inject", [good, {**good, "chat_jid": GROUP_B}])
        assert status == 200 and len(bulk) == 2 and len({r["id"] for r in bulk} | {ok["id"]}) == 3
    scenario(sim_url, body)


@pytest.mark.slow
def test_offline_queue_is_replayed_flagged_offline_and_only_acked_messages_leave_it(sim_url: str) -> None:
    async def body(c: Client) -> None:
        ids = [(await c.api.inject(f"DR100000{i} installed"))["id"] for i in range(3)]
        assert (await c.api.session())["queue_depth"] == 3

        first = await c.connect()
        frames = await first.until("offline_sync_done")
        assert frames[0]["type"] == "connected" and frames[0]["jid"] == f"{MAIN_PHONE}@s.whatsapp.net"
        delivered = [m for f in frames if f["type"] == "messages" for m in f["messages"]]
        assert [m["id"] for m in delivered] == ids
        assert all(f["offline"] for f in frames if f["type"] == "messages")
        assert frames[-1] == {"type": "offline_sync_done", "count": 3}
        assert delivered[0]["text"] == "DR1000000 installed" and delivered[0]["chat_name"] == "Lawley Fibre"
        await first.ack(ids[:1])
        live_id = (await c.api.inject("DR2000000 live"))["id"]
        (live,) = await first.until("messages")
        assert live["offline"] is False and [m["id"] for m in live["messages"]] == [live_id]
        await until(lambda: _depth_is(c, 3), message="first ack applied")
        await first.ws.close()

        second = await c.connect()  # the un-acked ones come again, the acked one does not
        frames = await second.until("offline_sync_done")
        again = [m["id"] for f in frames if f["type"] == "messages" for m in f["messages"]]
        assert again == ids[1:] + [live_id] and frames[-1]["count"] == 3
        await second.ack(again)
        await until(lambda: _depth_is(c, 0), message="queue emptied by acks")
        await second.ws.close()

        third = await c.connect()
        assert (await third.until("offline_sync_done"))[-1]["count"] == 0
        state = await c.api.session()
        assert state["connections"] == 3 and state["stream_replaced"] == 0
    scenario(sim_url, body)


async def _depth_is(c: Client, depth: int) -> bool:
    return (await c.api.session())["queue_depth"] == depth


@pytest.mark.slow
def test_large_backlog_is_batched_into_few_frames(sim_url: str) -> None:
    async def body(c: Client) -> None:
        await c.api.inject_many([f"DR{i:07d}" for i in range(1200)])
        sock = await c.connect()
        frames = await sock.until("offline_sync_done")
        batches = [len(f["messages"]) for f in frames if f["type"] == "messages"]
        assert sum(batches) == 1200 and len(batches) == 3  # 500 a frame
    scenario(sim_url, body)


@pytest.mark.slow
def test_second_connection_replaces_the_first_with_stream_replaced(sim_url: str) -> None:
    async def body(c: Client) -> None:
        first = await c.connect()
        await first.until("offline_sync_done")
        second = await c.connect()
        code, reason = await first.closed()
        assert code == 4409 and "stream replaced" in reason
        await second.until("offline_sync_done")
        message_id = (await c.api.inject("DR7654321 after takeover"))["id"]
        assert [m["id"] for m in await second.messages(1)] == [message_id]
        state = await c.api.session()
        assert state == {**state, "connected": True, "connections": 2, "stream_replaced": 1, "dead_replaced": 0}
        assert (await c.api.session(SENDER_PHONE))["stream_replaced"] == 0
    scenario(sim_url, body)


@pytest.mark.slow
def test_unknown_session_is_logged_out_and_a_missing_hello_a_protocol_error(sim_url: str) -> None:
    async def body(c: Client) -> None:
        code, reason = await (await c.connect("27799999999")).closed()
        assert code == 4401 and "unknown session" in reason
        code, reason = await (await c.connect(hello={"type": "ack", "ids": []})).closed()
        assert (code, reason) == (4400, "protocol error: expected a hello frame first")
        assert (await c.api.session())["connections"] == 0
    scenario(sim_url, body)


@pytest.mark.slow
def test_disconnect_on_request_closes_with_the_reason(sim_url: str) -> None:
    async def body(c: Client) -> None:
        assert await c.api.disconnect(reason="nobody connected") is False
        sock = await c.connect()
        await sock.until("offline_sync_done")
        assert await c.api.disconnect(reason="maintenance") is True
        assert await sock.closed() == (4000, "server disconnect: maintenance")
        state = await c.api.session()
        assert state["connected"] is False and state["disconnects"] == 1
    scenario(sim_url, body)


@pytest.mark.slow
def test_history_returns_the_range_inclusive(sim_url: str) -> None:
    async def body(c: Client) -> None:
        posted = [await c.api.inject(f"DR300000{i}") for i in range(4)]
        await c.api.inject("other group", chat_jid=GROUP_B)
        status, middle = await c.api.call("GET", "/sim/messages", chat_jid=GROUP_A,
                                          since=posted[1]["timestamp"], until=posted[2]["timestamp"])
        assert status == 200 and [m["id"] for m in middle] == [posted[1]["id"], posted[2]["id"]]

        sock = await c.connect()
        reply = await sock.request(type="history", chat_jid=GROUP_A, since=posted[3]["timestamp"],
                                   until=datetime.now().astimezone().isoformat())
        assert reply["ok"] and [m["id"] for m in reply["messages"]] == [posted[3]["id"]]
        reply = await sock.request(type="history", chat_jid="120363000000000099@g.us", since=None, until=None)
        assert reply["ok"] is False and "unknown group" in reply["error"]
    scenario(sim_url, body)


@pytest.mark.slow
def test_send_is_recorded_deduplicated_by_id_and_reaches_the_other_session(sim_url: str) -> None:
    async def body(c: Client) -> None:
        listener = await c.connect(MAIN_PHONE)
        await listener.until("offline_sync_done")
        sender = await c.connect(SENDER_PHONE)
        await sender.until("offline_sync_done")
        mention = "27710000001@s.whatsapp.net"
        frame = {"type": "send", "id": "3EB0FEEDBACK01", "recipient": GROUP_A,
                 "text": "@27710000001 DR1234567 - needs correction", "mentioned_jids": [mention]}
        first = await sender.request(**frame)
        again = await sender.request(**{**frame, "text": "changed on resend"})
        assert first["ok"] and again == first  # same id: same message, original timestamp

        (seen,) = await listener.messages(1)
        assert seen["id"] == "3EB0FEEDBACK01" and seen["sender_jid"] == f"{SENDER_PHONE}@s.whatsapp.net"
        assert seen["text"] == frame["text"]
        # Not echoed to the sender: queued for it are only the delivered receipts of the group's two participants.
        assert (await c.api.session(SENDER_PHONE))["queue_depth"] == 2

        direct = await sender.request(type="send", id="DM1", recipient=mention, text="private")
        assert direct["ok"]
        for bad, problem in [("120363000000000099@g.us", "unknown group"), ("27710000001", "neither a group"),
                             (None, "neither a group")]:
            reply = await sender.request(type="send", id=f"BAD{bad}", recipient=bad, text="x")
            assert reply["ok"] is False and problem in reply["error"]
        reply = await sender.request(type="send", id="BADMENTION", recipient=GROUP_A, text="x",
                                     mentioned_jids=["27710000001"])
        assert reply["ok"] is False and "mentioned_jids" in reply["error"]

        records = await c.api.sent(session=SENDER_PHONE)
        assert [(r["id"], r["recipient"], r["text"], r["mentioned_jids"], r["media_type"]) for r in records] == [
            ("3EB0FEEDBACK01", GROUP_A, frame["text"], [mention], None), ("DM1", mention, "private", [], None)]
        assert records[0]["time"] == first["timestamp"] and records[0]["session"] == SENDER_PHONE
        assert await c.api.sent(session=MAIN_PHONE) == []
        status, history = await c.api.call("GET", "/sim/messages", chat_jid=GROUP_A)
        assert [m["id"] for m in history] == ["3EB0FEEDBACK01"]
    scenario(sim_url, body)


@pytest.mark.slow
def test_media_is_described_and_downloadable(sim_url: str) -> None:
    async def body(c: Client) -> None:
        data = os.urandom(3000)
        media = {"type": "image", "filename": "pole.jpg", "data_b64": base64.b64encode(data).decode()}
        await c.api.inject("DR1734150 installed, pics attached", media=media)
        sock = await c.connect()
        (message,) = await sock.messages(1)
        info = message["media"]
        assert info["type"] == "image" and info["filename"] == "pole.jpg" and info["file_length"] == 3000
        assert info["url"].startswith("sim://media/") and len(base64.b64decode(info["media_key"])) == 32
        assert base64.b64decode(info["file_sha256"]) == hashlib.sha256(data).digest()
        reply = await sock.request(type="download", url=info["url"])
        assert base64.b64decode(reply["data_b64"]) == data
        reply = await sock.request(type="download", url="sim://media/nope")
        assert reply["ok"] is False and "no such media" in reply["error"]

        sent = await sock.request(type="send", id="PIC1", recipient=GROUP_A, text="caption",
                                  media={"type": "document", "filename": "report.pdf", "data_b64": "JVBERi0="})
        assert sent["ok"] and (await c.api.sent())[0]["media_type"] == "document"
    scenario(sim_url, body)


@pytest.mark.slow
def test_scheduled_disconnects(write_config: Callable[..., Path]) -> None:
    config = write_config(BASE_CONFIG.replace("[sim]\n", "[sim]\ndisconnect_every = [0.5, 1.0]\n"), name="sched.toml")
    procs = Processes(config)
    try:
        _, url = start_sim(procs, config.parent / "data")

        async def body(c: Client) -> None:
            for _ in range(2):
                sock = await c.connect()
                await sock.until("offline_sync_done")
                code, reason = await sock.closed()  # well within the 5 s receive deadline
                assert (code, reason) == (4000, "server disconnect: scheduled")
            assert (await c.api.session())["disconnects"] == 2
        scenario(url, body)
    finally:
        procs.stop_all()


@pytest.mark.slow
def test_traffic_generator_posts_drop_numbers(write_config: Callable[..., Path]) -> None:
    config = write_config(BASE_CONFIG.replace("[sim]\n", "[sim.traffic]\nenabled = true\ninterval = 0.02\n\n[sim]\n"),
                          name="traffic.toml")
    procs = Processes(config)
    try:
        _, url = start_sim(procs, config.parent / "data")

        async def body(c: Client) -> None:
            async def posted() -> list[dict]:
                found = []
                for group in (GROUP_A, GROUP_B, GROUP_C):
                    found += (await c.api.call("GET", "/sim/messages", chat_jid=group))[1]
                return found if len(found) >= 20 else []
            messages = await until(posted, message="20 traffic messages")
            assert any(re.search(r"\bDR\d{6,8}\b", m["text"]) for m in messages)
            assert {m["chat_jid"] for m in messages} > {GROUP_A}  # more than one group
            assert all(m["sender_jid"].endswith("@s.whatsapp.net") for m in messages)
            assert (await c.api.session())["queue_depth"] >= 20
        scenario(url, body)
    finally:
        procs.stop_all()


def test_demo_texts_mix_drop_lengths_chatter_and_resubmissions() -> None:
    rng, earlier = random.Random(4), []
    texts = [demo_text(rng, earlier) for _ in range(400)]
    lengths = {len(m) - 2 for t in texts for m in re.findall(r"DR\d+", t)}
    assert lengths == {6, 7, 8}
    assert any(not re.search(r"DR\d", t) for t in texts)
    resubmitted = [i for i, t in enumerate(texts) if t.startswith("Resubmitting")]
    assert resubmitted
    for i in resubmitted:
        number = re.search(r"DR\d+", texts[i]).group()
        assert any(number in earlier_text for earlier_text in texts[:i])


@pytest.mark.slow
def test_sd_notify_and_sigterm_exit_0(procs: Processes, data_dir: Path, notify_socket: socket.socket) -> None:
    address = "@" + notify_socket.getsockname()[1:].decode()
    proc = procs.start("sim", env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"})
    url = wait_until(lambda: _published(data_dir), message="sim endpoint")
    ready = notify_socket.recv(4096).decode()
    assert ready.startswith("READY=1\nSTATUS=0/2 sessions connected")
    beats: list[str] = []
    while len(beats) < 3:  # every 0.2 s (half of WATCHDOG_USEC); STATUS= goes on its own when it changed
        beat = notify_socket.recv(4096).decode()
        assert beat == "WATCHDOG=1" or beat.startswith("STATUS=")
        beats += [beat] if beat == "WATCHDOG=1" else []

    async def connected_then_terminated() -> tuple[int, str]:
        async with aiohttp.ClientSession() as http:
            sock = await Client(http, url).connect()
            await sock.until("offline_sync_done")
            proc.send_signal(signal.SIGTERM)
            return await sock.closed()
    assert asyncio.run(connected_then_terminated()) == (1001, "server going away")
    assert proc.wait(timeout=10) == 0
    while (line := notify_socket.recv(4096).decode()) != "STOPPING=1":
        assert line == "WATCHDOG=1" or line.startswith("STATUS=")
    assert b"Traceback" not in proc.stderr.read()
    assert not (data_dir / "run" / "sim.json").exists()


def _published(data_dir: Path) -> str | None:
    return endpoints.url(data_dir, "sim")


@pytest.mark.slow
def test_without_a_sim_table_exits_2_naming_it(write_config: Callable[..., Path]) -> None:
    config = write_config(BASE_CONFIG.split("[sim]")[0] + '[accounts.main]\ntransport = "neonize"\nphone = "27710000000"\n',
                          name="nosim.toml")
    proc = Processes(config).start("sim")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and b"sim: missing [sim] table" in err


def test_offline_sync_done_follows_the_replay_even_while_live_messages_keep_coming(config_path: Path) -> None:
    """Live traffic during the replay must not hold back offline_sync_done (the bridge backfills on it)."""
    config = load(config_path)
    state = SimState(config)
    group, session = state.groups[GROUP_A], state.sessions[MAIN_PHONE]
    for i in range(2):
        state.post(group, CONTRACTOR, f"DR100000{i} queued")

    class RecordingSocket:  # stands in for the aiohttp websocket: records the frames deliver() writes
        def __init__(self) -> None:
            self.frames: list[dict] = []
            self.conn = Connection(session, self)  # type: ignore[arg-type]

        async def send_str(self, data: str) -> None:
            self.frames.append(json.loads(data))
            if len(self.frames) == 1:
                state.post(group, CONTRACTOR, "DR2000000 arrives during the replay")
            if len(self.frames) == 3:
                self.conn.closing = True

    async def run() -> list[dict]:
        sock = RecordingSocket()
        await asyncio.wait_for(Sim(config, state).deliver(sock.conn), 5)
        return sock.frames

    frames = asyncio.run(run())
    assert [(f["type"], f.get("offline"), len(f.get("messages", []))) for f in frames] == [
        ("messages", True, 2), ("offline_sync_done", None, 0), ("messages", False, 1)]
    assert frames[1]["count"] == 2


def test_history_answers_by_time_after_the_clock_was_stepped_back(config_path: Path, fixed_clock: Callable) -> None:
    """Messages dated an hour back (the simulator's clock stepped, as the chaos round's is) are found by their
    time: the range was a bisection over times in arrival order, which a step back leaves out of order, and the
    answer was empty (the chaos round's lost drop DR7000179)."""
    fixed_clock(datetime(2026, 12, 6, 14, 58).astimezone())
    state = SimState(load(config_path))
    group = state.groups[GROUP_A]
    early = [state.post(group, CONTRACTOR, f"DR100000{i} before the step") for i in range(10)]
    clock.step_for_tests(-3600)
    late = [state.post(group, CONTRACTOR, f"DR200000{i} after it") for i in range(2)]
    since, until = clock.now() - timedelta(seconds=30), clock.now() + timedelta(seconds=30)
    assert [m.text for m in state.history(GROUP_A, since.isoformat(), until.isoformat())] == [m.text for m in late]
    assert [m.text for m in state.history(GROUP_A, None, None)] == [m.text for m in late + early]  # time order


@pytest.mark.slow
def test_a_taken_port_exits_1_with_a_clear_message(write_config: Callable[..., Path]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(BASE_CONFIG.replace("[sim]\nport = 0\n", f"[sim]\nport = {port}\n"), name="taken.toml")
        proc = Processes(config).start("sim")
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and f"cannot listen on 127.0.0.1:{port}".encode() in err and b"Traceback" not in err


def test_membership_is_the_groups_that_list_the_number_and_only_members_receive(write_config) -> None:
    """main is listed in group A only: it is in A, and a post in B is not queued for it; `sender`, listed nowhere,
    is in every group (configs that list only the contractors, as the demo's)."""
    text = TWO_SESSIONS_CONFIG.replace('participants = ["27710000001", "27710000002"]',
                                       f'participants = ["{MAIN_PHONE}", "27710000001", "27710000002"]')
    state = SimState(load(write_config(text)))
    assert state.members[MAIN_PHONE] == {GROUP_A}
    assert state.members[SENDER_PHONE] == {GROUP_A, GROUP_B, GROUP_C}
    state.post(state.groups[GROUP_B], CONTRACTOR, "DR1000001 in B")
    state.post(state.groups[GROUP_A], CONTRACTOR, "DR1000002 in A")
    assert [m.text for _, m in state.sessions[MAIN_PHONE].after(0, 10)] == ["DR1000002 in A"]
    assert len(state.sessions[SENDER_PHONE].after(0, 10)) == 2
