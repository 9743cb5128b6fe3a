"""Coalescing while waiting (issue 22): acknowledgements of a group falling due while its earlier message still waits
in the bridge's paced outbox join it, as one message, rather than queueing behind it. Through the real monitor,
bridge and simulator, with a slow pace so the acknowledgements queue."""
from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.bridge_support import call, inject, start_bridge, start_sim
from tests.conftest import BASE_CONFIG, GROUP_A, MESSAGE_ACK, PACE_OFF, Processes, wait_until
from tests.monitor_support import all_sent, query, start_monitor

CONTRACTOR = "27710000001@s.whatsapp.net"
OTHER = "27710000002@s.whatsapp.net"
GAP_S = 10.0  # between two messages to one chat: what keeps the acknowledgements queued meanwhile (they queue
# within ~1 s of the first message on a busy machine)
SLOW_PACE = (f"pace = {{ per_minute = 0, per_hour = 0, per_day = 0, reactions_per_minute = 0, chat_gap_s = {GAP_S:g}, "
             "chat_jitter_s = 0, typing = false, ramp_s = 0 }")
CONFIG = BASE_CONFIG.replace(PACE_OFF, SLOW_PACE, 1).replace(
    MESSAGE_ACK, 'feedback = { ack = "message", coalesce_s = 0.3 }', 1)


def _queued(data_dir: Path, drop: str) -> bool:
    return query(data_dir, "SELECT f.status FROM feedback f JOIN drops d ON d.id = f.drop_id WHERE d.drop_number = ?",
                 drop) == [("queued",)]


def _first_message_sent(sim_url: str, data_dir: Path) -> None:
    """A first drop acknowledged at once: from here the group's next message waits GAP_S in the outbox."""
    inject(sim_url, "DR1000000 done", GROUP_A, CONTRACTOR)
    wait_until(lambda: query(data_dir, "SELECT status FROM feedback") == [("sent",)], timeout=30,
               message="the first acknowledgement sent")


class Running(NamedTuple):
    sim_url: str
    bridge_url: str
    monitor: subprocess.Popen


@pytest.fixture
def running(procs: Processes, data_dir: Path, write_config) -> Running:  # noqa: ANN001
    """The simulator, the bridge and lawley's monitor, the group's first acknowledgement already sent."""
    write_config(CONFIG)
    _, sim_url = start_sim(procs, data_dir)
    _, bridge_url = start_bridge(procs, data_dir)
    monitor = start_monitor(procs, "lawley")
    _first_message_sent(sim_url, data_dir)
    return Running(sim_url, bridge_url, monitor)


def _one_message_for(sim_url: str, data_dir: Path, drops: list[str]) -> dict:
    """Wait for every acknowledgement sent; they went out as one message, after the first drop's: returned."""
    wait_until(lambda: query(data_dir, "SELECT COUNT(*) FROM feedback WHERE status = 'sent'") == [(len(drops) + 1,)],
               timeout=GAP_S + 60, message="every acknowledgement sent")
    first, joined = all_sent(sim_url)  # nothing else went to the group
    assert "DR1000000" in first["text"]
    rows = query(data_dir, "SELECT d.drop_number, f.id, f.bridge_message_id, f.carrier_id FROM feedback f "
                           "JOIN drops d ON d.id = f.drop_id WHERE d.drop_number != 'DR1000000' ORDER BY f.id")
    assert [row[0] for row in rows] == drops
    assert {row[2:] for row in rows} == {(joined["id"], rows[0][1])}  # each marked with that message, one carrier
    for drop in drops:
        assert joined["text"].count(drop) == 1
    return joined


@pytest.mark.slow
def test_acks_falling_due_while_the_groups_message_is_queued_join_it_as_one_message(
        running: Running, data_dir: Path) -> None:
    sim_url = running.sim_url
    for drop, sender in (("DR1000001", CONTRACTOR), ("DR1000002", OTHER), ("DR1000003", CONTRACTOR)):
        inject(sim_url, f"{drop} done", GROUP_A, sender)
        wait_until(lambda: _queued(data_dir, drop), timeout=30, message=f"{drop}'s acknowledgement queued")
    joined = _one_message_for(sim_url, data_dir, ["DR1000001", "DR1000002", "DR1000003"])
    assert joined["text"] == ("@27710000001 DR1000001, DR1000003 received, thank you\n"
                              "@27710000002 DR1000002 received, thank you")
    assert joined["mentioned_jids"] == [CONTRACTOR, OTHER]  # each submitter mentioned once
    wait_until(lambda: query(data_dir, "SELECT COUNT(*) FROM feedback WHERE delivered_at IS NOT NULL") == [(4,)],
               timeout=30, message="the message's delivery receipt stamped on each drop it carried")


@pytest.mark.slow
def test_a_monitor_killed_after_the_withdraw_before_its_mark_loses_and_doubles_nothing(
        running: Running, procs: Processes, data_dir: Path) -> None:
    sim_url, bridge_url, monitor = running
    inject(sim_url, "DR1000001 done", GROUP_A, CONTRACTOR)
    wait_until(lambda: _queued(data_dir, "DR1000001"), timeout=30, message="DR1000001's acknowledgement queued")
    monitor.send_signal(signal.SIGKILL)
    monitor.wait(timeout=10)
    # The moment a kill can fall in: the bridge withdrew the queued message, the monitor had not yet marked it.
    ((key,),) = query(data_dir, "SELECT f.idempotency_key FROM feedback f JOIN drops d ON d.id = f.drop_id "
                                "WHERE d.drop_number = 'DR1000001'")
    status, body = call("POST", f"{bridge_url}/api/withdraw", {"idempotency_keys": [key]})
    assert (status, body["states"]) == (200, {key: "withdrawn"})
    inject(sim_url, "DR1000002 done", GROUP_A, OTHER)  # while the monitor is down
    start_monitor(procs, "lawley")
    joined = _one_message_for(sim_url, data_dir, ["DR1000001", "DR1000002"])
    assert joined["mentioned_jids"] == [CONTRACTOR, OTHER]


@pytest.mark.slow
def test_a_message_already_sent_is_left_and_the_new_acks_go_as_their_own(
        running: Running, data_dir: Path) -> None:
    sim_url = running.sim_url
    inject(sim_url, "DR1000001 done", GROUP_A, CONTRACTOR)
    wait_until(lambda: len(all_sent(sim_url)) == 2, timeout=GAP_S + 60, message="DR1000001's message sent")
    inject(sim_url, "DR1000002 done", GROUP_A, OTHER)
    wait_until(lambda: query(data_dir, "SELECT COUNT(*) FROM feedback WHERE status = 'sent'") == [(3,)],
               timeout=GAP_S + 60, message="every acknowledgement sent")
    texts = [sent["text"] for sent in all_sent(sim_url)]
    assert len(texts) == 3 and "DR1000001" in texts[1] and "DR1000002" in texts[2] and "DR1000001" not in texts[2]
