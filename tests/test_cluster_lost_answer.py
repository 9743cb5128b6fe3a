"""A send whose answer its own host's bridge lost is never sent twice silently (issue 21), with two real hosts on one
simulator and a real PostgreSQL, in server-ids mode (`[sim] server_ids`: the ids are WhatsApp's, as through neonize,
so a resend would be a second message).

Host A holds the sender lease; its bridge hands an acknowledgement to WhatsApp and the connection drops before the
answer (`/sim/withhold` with `drop`). A's bridge holds the row in doubt and never sends it again; A's device got no
copy of its own send, but B's did, and B's monitor published it (`device_copies`):
- A finds it there and marks the feedback sent with that message's id: the ack reached the group once;
- the same for an ack A's bridge had accepted (202, queued behind its pace) and lost the answer of later: the
  keeper hears of it in the bridge's answer to its next word (`doubt`) and the row is pending again, to be found out;
- with B's device away too, A cannot know: the feedback is `unknown` (recovery log, status), never sent again; once B
  is back and its device receives the copy WhatsApp queued for it, A finds it after all.
"""
from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from scripts.benchmarks.cluster_run import (Poster, ack_row, sent_of, server_ids, signal_tree, two_hosts,
                                            watchdog_and_bridge, withhold)
from scripts.benchmarks.system_run import PACE_OFF, RunningSystem
from tests.conftest import wait_until
from tests.test_cluster import A_PACED
from tests.test_cluster_fate import FATE, logged_fates, warm

A_GAP_8S = A_PACED.replace("chat_gap_s = 600", "chat_gap_s = 8")  # A sends one ack, the next 8 s later


@contextmanager
def neonize_like(tmp_path: Path, pg_url: str, unknown_after_s: float = 30, pace_a: str = PACE_OFF
                 ) -> Iterator[tuple[RunningSystem, RunningSystem, Poster]]:
    """Two hosts in server-ids mode, A holding the sender lease, and a poster of drops; both stopped at the end."""
    a, b = two_hosts(tmp_path, pg_url, edit=server_ids, extra=FATE.format(unknown_after_s), pace_a=pace_a)
    try:
        yield a, b, Poster(a)
    finally:
        b.stop()
        a.stop()


@contextmanager
def resumed(processes: list[psutil.Process]) -> Iterator[None]:
    """Whatever of `processes` is still stopped at the end is resumed (a failed test leaves nothing paused)."""
    try:
        yield
    finally:
        signal_tree(processes, signal.SIGCONT)


def lost_answer(a: RunningSystem, poster: Poster) -> tuple[str, dict]:
    """A's bridge sends the next acknowledgement and loses its answer (the connection drops right after WhatsApp
    took it); then answers flow again. The drop and what reached the group."""
    withhold(a, "vps-a", True, drop=True)
    poster.post(1)
    drop = poster.posted[-1]
    [sent] = wait_until(lambda: sent_of(a, drop), timeout=30, message="A's bridge to hand the ack to WhatsApp")
    withhold(a, "vps-a", False)
    key = ack_row(a, drop)[3]
    wait_until(lambda: a.query("messages", "SELECT status FROM outbox WHERE idempotency_key = ?", key) == [("doubt",)],
               timeout=30, message="A's bridge to hold the row in doubt")
    return drop, sent


def in_group_once(a: RunningSystem, poster: Poster, drop: str) -> None:
    """`drop`'s ack reached the group once, and the next one goes as usual."""
    assert len(sent_of(a, drop)) == 1
    poster.post(1)
    wait_until(lambda: ack_row(a, poster.posted[-1])[0] == "sent", timeout=30, message="the next ack to go as usual")
    assert len(sent_of(a, poster.posted[-1])) == 1 and len(sent_of(a, drop)) == 1


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_send_whose_answer_the_holders_own_bridge_lost_is_found_through_the_other_hosts_copy_and_sent_once(
        tmp_path: Path, pg_url: str) -> None:
    with neonize_like(tmp_path, pg_url) as (a, b, poster):
        warm(poster, a)
        drop, sent = lost_answer(a, poster)
        wait_until(lambda: ack_row(a, drop)[0] == "sent", timeout=60, message="A to find B's copy and mark it sent")
        assert ack_row(a, drop)[1:3] == (sent["id"], "vps-a")  # the message WhatsApp has, handed by A
        assert b.query("drops", "SELECT node FROM device_copies WHERE message_id = ?", sent["id"]) == [("vps-b",)]
        assert a.query("messages", "SELECT COUNT(*) FROM messages WHERE id = ?", sent["id"]) == [(0,)]  # only B's
        [fate] = logged_fates(a, 1)
        assert (fate["outcome"], fate["matched_by"], fate["drops"], fate["handed_by"]) == ("found", "text", [drop],
                                                                                          "vps-a")
        in_group_once(a, poster, drop)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_lost_answer_no_other_device_saw_is_unknown_never_sent_again_then_found_when_the_copy_arrives(
        tmp_path: Path, pg_url: str) -> None:
    away: list[psutil.Process] = []
    with neonize_like(tmp_path, pg_url, unknown_after_s=4) as (a, b, poster), resumed(away):
        warm(poster, a)
        away += watchdog_and_bridge(b)
        signal_tree(away, signal.SIGSTOP)  # B's device away from WhatsApp: no copy reaches B meanwhile
        drop, sent = lost_answer(a, poster)
        wait_until(lambda: ack_row(a, drop)[0] == "unknown", timeout=60, message="A to give up finding out")
        [fate] = logged_fates(a, 1)
        assert (fate["outcome"], fate["drops"], fate["handed_by"]) == ("unknown", [drop], "vps-a")
        assert len(sent_of(a, drop)) == 1  # never sent again by itself
        signal_tree(away, signal.SIGCONT)  # back: WhatsApp delivers the copy it queued for B's device
        away.clear()
        wait_until(lambda: ack_row(a, drop)[0] == "sent", timeout=60, message="A to find B's copy after all")
        assert ack_row(a, drop)[1] == sent["id"]
        assert [(f["outcome"], f.get("later")) for f in logged_fates(a, 2)] == [("unknown", None), ("found", True)]
        in_group_once(a, poster, drop)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_queued_send_whose_answer_was_lost_later_is_taken_back_from_the_keepers_word_and_found_once(
        tmp_path: Path, pg_url: str) -> None:
    with neonize_like(tmp_path, pg_url, pace_a=A_GAP_8S) as (a, b, poster):
        poster.post(2)
        wait_until(lambda: a.query("drops", "SELECT status, COUNT(*) FROM feedback GROUP BY status ORDER BY status")
                   == [("queued", 1), ("sent", 1)], timeout=60, message="A to send one ack and queue the next")
        [drop] = [d for d in poster.posted if ack_row(a, d)[0] == "queued"]
        withhold(a, "vps-a", True, drop=True)  # when its turn comes, its answer is lost
        [sent] = wait_until(lambda: sent_of(a, drop), timeout=60, message="A's bridge to send the queued ack")
        withhold(a, "vps-a", False)
        wait_until(lambda: ack_row(a, drop)[0] == "sent", timeout=60, message="A to take it back and find B's copy")
        assert ack_row(a, drop)[1:3] == (sent["id"], "vps-a")
        assert a.query("messages", "SELECT status FROM outbox WHERE idempotency_key = ?", ack_row(a, drop)[3]) == [
            ("doubt",)]
        [fate] = logged_fates(a, 1)
        assert (fate["outcome"], fate["drops"]) == ("found", [drop])
        assert len(sent_of(a, drop)) == 1
