"""SimTransport against the real simulator process, observed through a recording Handler."""
from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp
import pytest

from bridge.simulator.model import iso
from bridge.transport import (AnswerLost, ConnectionKind, NotConnected, OutgoingMedia, OutgoingMessage, SendFailed,
                              Source, Transport)
from bridge.transports.sim import SimTransport
from scripts.benchmarks.cluster_run import server_ids
from tests.conftest import BASE_CONFIG, GROUP_A, Processes, until
from tests.sim_helpers import (CONTRACTOR, MAIN_PHONE, SENDER_PHONE, TWO_SESSIONS_CONFIG, Recorder, SimAPI,
                               start_sim)
from watchdog.components import load

K = ConnectionKind


@pytest.fixture
def config_path(write_config: Callable[[str], Path]) -> Path:
    return write_config(TWO_SESSIONS_CONFIG)


def transport(config_path: Path, account: str = "main") -> SimTransport:
    config = load(config_path)
    return SimTransport(config, config.account(account))


class Running:
    """A transport's run() as a task, with its recorder; stopped by close() at the end of the test."""

    def __init__(self, t: Transport, recorder: Recorder) -> None:
        self.transport = t
        self.recorder = recorder
        self.task = asyncio.create_task(t.run(recorder))

    async def connected(self, times: int = 1) -> None:
        await until(lambda: self.recorder.count(K.OFFLINE_SYNC_DONE) >= times, message=f"sync #{times}")

    async def stop(self) -> None:
        await self.transport.close()
        await asyncio.wait_for(self.task, 5)


def scenario(url: str | None, body: Callable[[SimAPI], Awaitable[None]]) -> None:
    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            await body(SimAPI(http, url or "http://127.0.0.1:9"))
    asyncio.run(main())


@pytest.fixture
def sim_url(procs: Processes, data_dir: Path) -> str:
    return start_sim(procs, data_dir)[1]


@pytest.mark.slow
def test_offline_then_live_delivery_acked_after_the_handler_returns(config_path: Path, sim_url: str) -> None:
    async def body(api: SimAPI) -> None:
        ids = [(await api.inject(f"DR500000{i}"))["id"] for i in range(3)]
        run = Running(transport(config_path), Recorder())
        await run.connected()
        rec = run.recorder
        assert rec.log == ["connected", "messages", "offline_sync_done"]  # one batch for the backlog
        assert [m.id for m in rec.messages] == ids and {m.source for m in rec.messages} == {Source.OFFLINE}
        first = rec.messages[0]
        assert (first.chat_jid, first.chat_name, first.sender_jid, first.text) == (
            GROUP_A, "Lawley Fibre", CONTRACTOR, "DR5000000")
        assert first.timestamp.tzinfo is not None and first.is_from_me is False
        await until(lambda: _depth(api, 0), message="backlog acked")

        live = await api.inject("DR6000000 live")
        await until(lambda: len(rec.messages) == 4, message="live message")
        assert rec.messages[-1].id == live["id"] and rec.messages[-1].source == Source.LIVE
        await until(lambda: _depth(api, 0), message="live message acked")
        await run.stop()
        assert rec.events[-1].kind == K.DISCONNECTED and rec.events[-1].reason == "closed by client"
    scenario(sim_url, body)


async def _depth(api: SimAPI, depth: int, phone: str = MAIN_PHONE) -> bool:
    return (await api.session(phone))["queue_depth"] == depth


@pytest.mark.slow
def test_a_slow_commit_gets_consecutive_frames_as_one_batch(config_path: Path, sim_url: str) -> None:
    async def body(api: SimAPI) -> None:
        await api.inject_many([f"DR{i:07d}" for i in range(1500)])  # 3 frames of 500
        run = Running(transport(config_path), Recorder(commit_delay=0.1))
        await run.connected()
        rec = run.recorder
        assert len(rec.messages) == 1500 and len({m.id for m in rec.messages}) == 1500
        assert len(rec.batches) < 3, [len(b) for b in rec.batches]
        await until(lambda: _depth(api, 0), message="all acked")
        await run.stop()
    scenario(sim_url, body)


@pytest.mark.slow
def test_messages_the_handler_failed_to_commit_are_not_acked_and_come_again(config_path: Path, sim_url: str) -> None:
    async def body(api: SimAPI) -> None:
        ids = [(await api.inject(f"DR700000{i}"))["id"] for i in range(2)]
        run = Running(transport(config_path), Recorder(fail_batches=1))
        await run.connected()
        rec = run.recorder
        assert rec.messages == [] and rec.log[:2] == ["connected", "messages"]
        assert (await api.session())["queue_depth"] == 2  # the failed batch stays queued on the server

        assert await api.disconnect(reason="redeliver") is True
        await run.connected(times=2)
        assert rec.reasons(K.DISCONNECTED) == ["server disconnect: redeliver"]
        assert [m.id for m in rec.messages] == ids and {m.source for m in rec.messages} == {Source.OFFLINE}
        await until(lambda: _depth(api, 0), message="acked after the successful commit")
        assert (await api.session())["connections"] == 2
        await run.stop()
    scenario(sim_url, body)


@pytest.mark.slow
def test_stream_replaced_is_reported_and_run_returns_without_reconnecting(config_path: Path, sim_url: str) -> None:
    async def body(api: SimAPI) -> None:
        first = Running(transport(config_path), Recorder())
        await first.connected()
        second = Running(transport(config_path), Recorder())
        await asyncio.wait_for(first.task, 5)  # run() returned by itself
        assert first.recorder.events[-1].kind == K.STREAM_REPLACED
        assert "stream replaced" in first.recorder.events[-1].reason
        assert first.recorder.count(K.CONNECTED) == 1
        await second.connected()
        state = await api.session()
        assert (state["connections"], state["stream_replaced"], state["dead_replaced"], state["connected"]) == (
            2, 1, 0, True)
        message_id = (await api.inject("DR8000000"))["id"]
        await until(lambda: [m.id for m in second.recorder.messages] == [message_id], message="new owner gets it")
        await second.stop()
        assert (await api.session())["connections"] == 2  # the replaced transport never came back
    scenario(sim_url, body)


@pytest.mark.slow
def test_scheduled_disconnects_are_reported_and_followed_by_reconnects(write_config: Callable[..., Path]) -> None:
    config = write_config(BASE_CONFIG.replace("[sim]\n", "[sim]\ndisconnect_every = [0.5, 1.0]\n"), name="sched.toml")
    procs = Processes(config)
    try:
        _, url = start_sim(procs, config.parent / "data")

        async def body(api: SimAPI) -> None:
            run = Running(transport(config), Recorder())
            await run.connected(times=3)
            assert run.recorder.reasons(K.DISCONNECTED)[:2] == ["server disconnect: scheduled"] * 2
            assert run.recorder.count(K.CONNECT_FAILED) == 0
            await run.stop()
        scenario(url, body)
    finally:
        procs.stop_all()


@pytest.mark.slow
def test_unreachable_sim_is_connect_failed_once_per_outage_and_a_restarted_sim_is_found(
        config_path: Path, procs: Processes, data_dir: Path) -> None:
    async def body(_: SimAPI) -> None:
        run = Running(transport(config_path), Recorder())
        rec = run.recorder
        await until(lambda: rec.count(K.CONNECT_FAILED) == 1, message="connect_failed")
        assert "published no endpoint" in rec.events[0].reason

        sim, _url = await asyncio.to_thread(start_sim, procs, data_dir)
        await run.connected()
        os.kill(sim.pid, signal.SIGKILL)  # run/sim.json stays behind, pointing at a dead port
        await until(lambda: rec.count(K.CONNECT_FAILED) == 2, message="second outage")
        assert "cannot connect to the simulator" in rec.reasons(K.CONNECT_FAILED)[1]
        attempts_seen = len(rec.events)

        _, url = await asyncio.to_thread(start_sim, procs, data_dir, sim)  # another free port
        await run.connected(times=2)
        assert rec.count(K.CONNECT_FAILED) == 2 and len(rec.events) == attempts_seen + 2  # no event per retry
        assert [e.kind for e in rec.events] == [K.CONNECT_FAILED, K.CONNECTED, K.OFFLINE_SYNC_DONE, K.DISCONNECTED,
                                                K.CONNECT_FAILED, K.CONNECTED, K.OFFLINE_SYNC_DONE]
        await run.stop()
    scenario(None, body)


def test_close_while_retrying_makes_run_return(config_path: Path) -> None:
    async def body(_: SimAPI) -> None:
        run = Running(transport(config_path), Recorder())
        await until(lambda: run.recorder.count(K.CONNECT_FAILED) == 1, message="connect_failed")
        await run.stop()
    scenario(None, body)


@pytest.mark.slow
def test_send_dedupes_by_message_id_and_maps_errors(config_path: Path, sim_url: str, tmp_path: Path) -> None:
    async def body(api: SimAPI) -> None:
        t = transport(config_path)
        message = OutgoingMessage("3EB0AAA1", GROUP_A, "@27710000001 DR1234567 received, thank you",
                                  ("27710000001@s.whatsapp.net",))
        with pytest.raises(NotConnected):
            await t.send(message)
        run = Running(t, Recorder())
        await run.connected()
        result = await t.send(message)
        assert result.message_id == "3EB0AAA1" and result.timestamp.tzinfo is not None
        assert await t.send(message) == result  # a resend after a crash is the same message
        (record,) = await api.sent(session=MAIN_PHONE)
        assert (record["recipient"], record["text"], record["mentioned_jids"], record["time"]) == (
            GROUP_A, message.text, ["27710000001@s.whatsapp.net"], iso(result.timestamp))

        with pytest.raises(SendFailed, match="unknown group"):
            await t.send(OutgoingMessage("X1", "120363000000000099@g.us", "x"))
        photo = tmp_path / "pole.jpg"
        photo.write_bytes(b"\xff\xd8 not really a jpeg")
        sent = await t.send(OutgoingMessage("PIC1", GROUP_A, "caption", media=OutgoingMedia(photo, "image", "pole.jpg")))
        history = await t.request_history(GROUP_A, sent.timestamp, sent.timestamp)
        assert [(m.id, m.is_from_me, m.source) for m in history] == [("PIC1", True, Source.HISTORY)]
        assert history[0].media and await t.download(history[0].media) == photo.read_bytes()
        with pytest.raises(SendFailed, match="cannot read media"):
            await t.send(OutgoingMessage("PIC2", GROUP_A, "x", media=OutgoingMedia(tmp_path / "gone.jpg", "image", "g")))
        await run.stop()
        with pytest.raises(NotConnected):
            await t.send(message)
    scenario(sim_url, body)


@pytest.mark.slow
def test_with_server_ids_the_simulator_chooses_each_sends_id_and_a_dropped_answer_is_answer_lost(
        write_config: Callable[[str], Path], sim_url: str) -> None:
    """`[sim] server_ids`: the sim transport sends as neonize does (the id is WhatsApp's, so a resend is a second
    message); a send the simulator took before the connection dropped is AnswerLost, one never written is only
    NotConnected (the outbox tells the two apart: bridge/outbox.py)."""
    assert transport(write_config(TWO_SESSIONS_CONFIG)).capabilities.chooses_ids is True
    t = transport(write_config(server_ids(TWO_SESSIONS_CONFIG)))
    assert (t.capabilities.chooses_ids, t.capabilities.history_request) == (False, False)  # as neonize 0.5.2

    async def body(api: SimAPI) -> None:
        message = OutgoingMessage("3EB0CHOSEN", GROUP_A, "DR1234567 received")
        with pytest.raises(NotConnected) as caught:
            await t.send(message)
        assert type(caught.value) is NotConnected  # nothing written: nothing can have gone
        run = Running(t, Recorder())
        await run.connected()
        first, second = await t.send(message), await t.send(message)
        assert first.message_id != second.message_id and "3EB0CHOSEN" not in (first.message_id, second.message_id)
        assert [s["id"] for s in await api.sent(session=MAIN_PHONE)] == [first.message_id, second.message_id]
        assert await api.call("POST", "/sim/withhold", {"session": MAIN_PHONE, "withhold": True, "drop": True}) == (
            200, {"withheld": True})
        with pytest.raises(AnswerLost, match="connection ended before the reply"):
            await asyncio.wait_for(t.send(OutgoingMessage("3EB0LOST", GROUP_A, "DR7654321 received")), 5)
        assert [s["text"] for s in await api.sent(session=MAIN_PHONE)][-1] == "DR7654321 received"  # it went
        await run.connected(2)  # and the transport connects again by itself
        _, sessions = await api.call("GET", "/sim/sessions")
        assert [d["server_ids"] for d in sessions[MAIN_PHONE]["devices"]] == [True]
        await run.stop()
    scenario(sim_url, body)


@pytest.mark.slow
def test_second_number_sends_are_seen_by_the_listener_as_from_the_sender(config_path: Path, sim_url: str) -> None:
    async def body(api: SimAPI) -> None:
        listener = Running(transport(config_path, "main"), Recorder())
        sender = Running(transport(config_path, "sender"), Recorder())
        await listener.connected()
        await sender.connected()
        await sender.transport.send(OutgoingMessage("FB1", GROUP_A, "@27710000001 DR1234567 - needs correction",
                                                    ("27710000001@s.whatsapp.net",)))
        await until(lambda: listener.recorder.messages, message="listener sees the feedback")
        (seen,) = listener.recorder.messages
        assert (seen.id, seen.sender_jid, seen.is_from_me, seen.source) == (
            "FB1", f"{SENDER_PHONE}@s.whatsapp.net", False, Source.LIVE)
        assert sender.recorder.messages == []
        await listener.stop()
        await sender.stop()
    scenario(sim_url, body)


@pytest.mark.slow
def test_history_request_by_range(config_path: Path, sim_url: str) -> None:
    async def body(api: SimAPI) -> None:
        posted = [await api.inject(f"DR900000{i}") for i in range(3)]
        run = Running(transport(config_path), Recorder())
        await run.connected()
        t = run.transport
        middle = datetime.fromisoformat(posted[1]["timestamp"])
        assert [m.id for m in await t.request_history(GROUP_A, middle, middle)] == [posted[1]["id"]]
        everything = await t.request_history(GROUP_A, middle - timedelta(hours=1), datetime.now(timezone.utc))
        assert [m.id for m in everything] == [p["id"] for p in posted]
        assert {m.source for m in everything} == {Source.HISTORY}
        assert await t.request_history("120363000000000099@g.us", middle, middle) == []
        await run.stop()
    scenario(sim_url, body)


def test_a_send_in_flight_when_the_sim_dies_raises_answer_lost(config_path: Path, procs: Processes,
                                                                  data_dir: Path) -> None:
    sim, url = start_sim(procs, data_dir)

    async def body(api: SimAPI) -> None:
        run = Running(transport(config_path), Recorder())
        await run.connected()
        os.kill(sim.pid, signal.SIGSTOP)  # the request is written but never answered
        pending = asyncio.create_task(run.transport.send(OutgoingMessage("LOST1", GROUP_A, "x")))
        await asyncio.sleep(0)  # let it write the frame
        os.kill(sim.pid, signal.SIGKILL)
        with pytest.raises(AnswerLost, match="connection ended before the reply"):  # written: it may have gone
            await asyncio.wait_for(pending, 5)
        await until(lambda: run.recorder.count(K.DISCONNECTED) == 1, message="disconnected")
        await run.stop()
    scenario(url, body)


@pytest.mark.slow
def test_a_frozen_sim_is_a_keepalive_disconnect_then_handshake_timeouts_until_it_thaws(
        config_path: Path, procs: Processes, data_dir: Path) -> None:
    sim, url = start_sim(procs, data_dir)

    async def body(api: SimAPI) -> None:
        t = transport(config_path)
        t.keepalive, t.handshake_timeout = 0.6, 0.5  # seconds instead of 3 and 3, to keep the test fast
        run = Running(t, Recorder())
        await run.connected()
        frozen_at = datetime.now(timezone.utc)
        os.kill(sim.pid, signal.SIGSTOP)  # accepts TCP in the kernel, answers nothing
        try:
            await until(lambda: run.recorder.count(K.CONNECT_FAILED) == 1, message="handshake timeout")
        finally:
            os.kill(sim.pid, signal.SIGCONT)
        (reason,) = run.recorder.reasons(K.DISCONNECTED)
        assert reason.startswith("connection lost: keepalive timeout (nothing for ")
        # dated at the last thing heard (a pong at most a third of the keepalive before the freeze)
        (lost,) = [e for e in run.recorder.events if e.kind == K.DISCONNECTED]
        assert frozen_at - timedelta(seconds=t.keepalive) <= lost.at <= frozen_at + timedelta(seconds=0.05)
        assert "cannot connect to the simulator" in run.recorder.reasons(K.CONNECT_FAILED)[0]
        await run.connected(times=2)
        message_id = (await api.inject("DR1111111 after the freeze"))["id"]
        await until(lambda: [m.id for m in run.recorder.messages] == [message_id], message="delivery resumes")
        await run.stop()
    scenario(url, body)


@pytest.mark.slow
def test_close_before_the_first_connection_leaves_no_socket_open(config_path: Path, sim_url: str) -> None:
    async def body(api: SimAPI) -> None:
        run = Running(transport(config_path), Recorder())
        await asyncio.sleep(0)  # run() has started its first connect
        await run.stop()
        assert (await api.session())["connected"] is False
        assert run.recorder.count(K.CONNECTED) == 0
    scenario(sim_url, body)


@pytest.mark.slow
def test_joined_groups_are_the_simulators_membership(write_config: Callable[..., Path], procs: Processes,
                                                      data_dir: Path) -> None:
    config_path = write_config(BASE_CONFIG.replace('participants = ["27710000003"]',
                                                   f'participants = ["{MAIN_PHONE}", "27710000003"]'))
    url = start_sim(procs, data_dir)[1]

    async def body(api: SimAPI) -> None:
        run = Running(transport(config_path), Recorder())
        with pytest.raises(NotConnected):
            await run.transport.joined_groups()  # before the connection
        await run.connected()
        assert await run.transport.joined_groups() == ["120363000000000002@g.us"]  # listed in Mohadin only
        await run.stop()
    scenario(url, body)
