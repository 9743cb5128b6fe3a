"""Sends of unknown fate in a cluster (issue 21, monitors/fate.py), with two real hosts on one simulator and a
real PostgreSQL: host A's monitor hands an acknowledgement to A's bridge and A dies before marking it sent.

- A's bridge sent it (WhatsApp took it; its answer never came back): B finds the copy its own device received
  and marks the row sent with that message's id; B's bridge is never handed it.
- A's bridge never sent it: B, connected all along, sees no copy and sends it, once.
- B's bridge was away from WhatsApp across the window: B cannot know; the feedback is `unknown`, with a recovery-log
  line, a `feedback_unknown` alert and the status section; the operator decides (`feedback --mark-sent`).

The simulator's `/sim/withhold` is the fault "WhatsApp took the send, its answer was lost"; it counts what
reached the group (`/sim/sent`, once per message id) and what a device sent again (`resent`).
"""
from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from scripts.benchmarks.cluster_run import (Poster, ack_row, holder, kill_tree, sent_of, signal_tree, two_hosts,
                                            watchdog_and_bridge, withhold)
from scripts.benchmarks.system_run import PHONE, RunningSystem, group_jid, http
from tests.conftest import wait_until
from tests.test_cluster import A_PACED
from tests.monitor_support import cli
from tests.monitors.test_group_watch import AlertInbox
from watchdog.components import load
from watchdog.shared.recovery_log import RecoveryLog

FATE = "copy_grace_s = 1\nunknown_after_s = {:g}\n"  # [cluster] keys: decide fast


@pytest.fixture
def inbox() -> Iterator[AlertInbox]:
    receiver = AlertInbox()
    yield receiver
    receiver.close()


def fates(system: RunningSystem) -> list[dict]:
    log = RecoveryLog(load(system.config_path).watchdog.recovery_log)
    return [r for r in log.read() if r.get("event") == "feedback_fate"]


def logged_fates(system: RunningSystem, count: int) -> list[dict]:
    """The recovery log's feedback_fate lines once there are `count`: a verdict is logged just after its mark."""
    wait_until(lambda: len(fates(system)) >= count, timeout=30, message=f"{count} feedback_fate lines logged")
    return fates(system)


def resent_by(system: RunningSystem, node: str) -> int:
    devices = http("GET", f"{system.sim_url}/sim/sessions")[PHONE]["devices"]  # type: ignore[index]
    return next(d["resent"] for d in devices if d["node"] == node)


def warm(poster: Poster, a: RunningSystem) -> None:
    """A first acknowledgement, sent and marked as usual: both hosts are up and A sends."""
    poster.post(1)
    wait_until(lambda: ack_row(a, poster.posted[-1])[0] == "sent", timeout=30, message="A to send the first ack")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_send_whose_answer_a_killed_host_never_got_is_found_by_the_new_holder_and_not_sent_again(
        tmp_path: Path, pg_url: str) -> None:
    a, b = two_hosts(tmp_path, pg_url, extra=FATE.format(30))
    poster = Poster(a)
    try:
        warm(poster, a)
        withhold(a, "vps-a", True)
        poster.post(1)
        drop = poster.posted[-1]
        [sent] = wait_until(lambda: sent_of(a, drop), timeout=30, message="A's bridge to send the acknowledgement")
        assert (ack_row(a, drop)[0], ack_row(a, drop)[2]) == ("pending", "vps-a")  # handed, not marked
        kill_tree(a)
        wait_until(lambda: holder(pg_url) == "vps-b", timeout=10, message="B to take the sender lease")
        wait_until(lambda: ack_row(a, drop)[0] == "sent", timeout=30, message="B to find A's copy and mark it sent")
        status, message_id, handed_by, key = ack_row(a, drop)
        assert (message_id, handed_by, sent["node"]) == (sent["id"], "vps-a", "vps-a")  # A's message; never B's
        assert len(sent_of(a, drop)) == 1 and resent_by(a, "vps-b") == 0  # B posted nothing for it
        assert b.query("messages", "SELECT COUNT(*) FROM outbox WHERE idempotency_key = ?", key) == [(0,)]
        [fate] = logged_fates(b, 1)
        assert (fate["outcome"], fate["matched_by"], fate["drops"], fate["handed_by"]) == ("found", "id", [drop],
                                                                                          "vps-a")
    finally:
        b.stop()
        a.stop()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_send_a_killed_host_never_made_is_sent_once_by_the_new_holder(tmp_path: Path, pg_url: str) -> None:
    a, b = two_hosts(tmp_path, pg_url, extra=FATE.format(30))
    poster = Poster(a)
    frozen: list[psutil.Process] = []
    try:
        warm(poster, a)
        frozen = watchdog_and_bridge(a)
        signal_tree(frozen, signal.SIGSTOP)  # A's bridge takes the post and never sends it
        poster.post(1)  # B records it (A's bridge stores nothing now); A's monitor claims it and hands it on
        drop = poster.posted[-1]
        wait_until(lambda: (ack_row(a, drop)[0], ack_row(a, drop)[2]) == ("pending", "vps-a"), timeout=30,
                   message="A's monitor to hand the acknowledgement to its (frozen) bridge")
        kill_tree(a)
        frozen = []
        wait_until(lambda: ack_row(a, drop)[0] == "sent", timeout=30, message="B to send the acknowledgement")
        [sent] = sent_of(a, drop)  # once, by B
        assert sent["node"] == "vps-b" and ack_row(a, drop)[1:3] == (sent["id"], "vps-b")
        [fate] = logged_fates(b, 1)
        assert (fate["outcome"], fate["drops"], fate["handed_by"]) == ("send", [drop], "vps-a")
    finally:
        signal_tree(frozen, signal.SIGCONT)
        b.stop()
        a.stop()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_what_a_killed_hosts_bridge_held_queued_is_found_out_by_the_new_holder_and_each_ack_goes_once(
        tmp_path: Path, pg_url: str) -> None:
    """A's bridge sent the first acknowledgement and answered 202 for the next four (`queued`: its pace holds them).
    A dies and never comes back, so nothing of A gives them back: B, a lease after its grant (A's bridge can send
    nothing after that), takes them over and finds out: no copy on B's device, so they never went, and B sends each
    once. None stays queued or unknown."""
    a, b = two_hosts(tmp_path, pg_url, extra=FATE.format(30), pace_a=A_PACED)
    poster = Poster(a)
    try:
        poster.post(5)
        wait_until(lambda: a.query("drops", "SELECT status, COUNT(*) FROM feedback GROUP BY status ORDER BY status")
                   == [("queued", 4), ("sent", 1)], timeout=60,
                   message="A's bridge to send one acknowledgement and queue four behind its pace")
        queued = [drop for drop in poster.posted if ack_row(a, drop)[0] == "queued"]
        assert all(ack_row(a, drop)[2] == "vps-a" for drop in queued)
        kill_tree(a)
        wait_until(lambda: all(ack_row(a, drop)[0] == "sent" for drop in poster.posted), timeout=90,
                   message="B to find out and mark every acknowledgement sent")
        acks = Counter(s["text"].split()[1] for s in a.sent() if s["recipient"] == group_jid(1))
        assert acks == Counter(poster.posted)  # every acknowledgement reached the group once
        assert all(s["node"] == "vps-b" for drop in queued for s in sent_of(a, drop))
        assert all(ack_row(a, drop)[1:3] == (sent_of(a, drop)[0]["id"], "vps-b") for drop in queued)
        assert a.query("drops", "SELECT status, COUNT(*) FROM feedback GROUP BY status") == [("sent", 5)]
        judged = logged_fates(b, len(queued))
        assert sorted((f["outcome"], *f["drops"]) for f in judged) == sorted(("send", drop) for drop in queued)
        assert resent_by(a, "vps-b") == 0
    finally:
        b.stop()
        a.stop()


def unknown_alerts(inbox: AlertInbox, status: str = "firing") -> list[dict]:
    return [x for x in inbox.bodies if x.get("rule") == "feedback_unknown" and x.get("status") == status]


def given_up(a: RunningSystem, b: RunningSystem, inbox: AlertInbox, drop: str) -> None:
    """B, its bridge away, could not find out: the feedback is unknown, alerted once, in B's recovery log."""
    wait_until(lambda: ack_row(a, drop)[0] == "unknown", timeout=90, message="B to give up finding out")
    [alert] = wait_until(lambda: unknown_alerts(inbox), timeout=30, message="the feedback_unknown alert")
    assert drop in alert["summary"]
    [fate] = logged_fates(b, 1)
    assert (fate["outcome"], fate["drops"], fate["handed_by"]) == ("unknown", [drop], "vps-a")


ALERTS = '\n[[alerts]]\nurl = "{}"\nformat = "json"\nrules = ["feedback_unknown"]\n'


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_send_the_new_holder_cannot_find_out_is_unknown_then_found_when_its_copy_arrives(
        tmp_path: Path, pg_url: str, inbox: AlertInbox) -> None:
    a, b = two_hosts(tmp_path, pg_url, extra=FATE.format(2) + ALERTS.format(inbox.url))
    poster = Poster(a)
    away: list[psutil.Process] = []
    try:
        warm(poster, a)
        away = watchdog_and_bridge(b)
        signal_tree(away, signal.SIGSTOP)  # B's bridge away from WhatsApp: it receives no copy of what A sends
        withhold(a, "vps-a", True)
        poster.post(1)
        drop = poster.posted[-1]
        [sent] = wait_until(lambda: sent_of(a, drop), timeout=30, message="A's bridge to send the acknowledgement")
        kill_tree(a)
        given_up(a, b, inbox, drop)
        signal_tree(away, signal.SIGCONT)  # back: WhatsApp delivers the copy it queued for B's device
        away = []
        wait_until(lambda: ack_row(a, drop)[0] == "sent", timeout=60, message="B to find the copy after all")
        assert ack_row(a, drop)[1] == sent["id"]
        [resolved] = wait_until(lambda: unknown_alerts(inbox, "resolved"), timeout=30, message="the alert resolved")
        assert drop in resolved["summary"] and len(unknown_alerts(inbox)) == 1
        assert [(f["outcome"], f.get("later")) for f in logged_fates(b, 2)] == [("unknown", None), ("found", True)]
        assert len(sent_of(a, drop)) == 1 and resent_by(a, "vps-b") == 0  # never sent twice
    finally:
        signal_tree(away, signal.SIGCONT)
        b.stop()
        a.stop()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_send_that_stays_unknown_is_shown_and_sent_once_when_the_operator_resends_it(
        tmp_path: Path, pg_url: str, inbox: AlertInbox) -> None:
    a, b = two_hosts(tmp_path, pg_url, extra=FATE.format(2) + ALERTS.format(inbox.url))
    poster = Poster(a)
    away: list[psutil.Process] = []
    frozen: list[psutil.Process] = []
    try:
        warm(poster, a)
        frozen = watchdog_and_bridge(a)
        signal_tree(frozen, signal.SIGSTOP)  # A's bridge takes the post and never sends it: no copy will ever come
        poster.post(1)  # B records it; A's monitor claims it and hands it on
        drop = poster.posted[-1]
        wait_until(lambda: (ack_row(a, drop)[0], ack_row(a, drop)[2]) == ("pending", "vps-a"), timeout=30,
                   message="A's monitor to hand the acknowledgement to its frozen bridge")
        away = watchdog_and_bridge(b)
        signal_tree(away, signal.SIGSTOP)  # B's bridge away: B cannot know what A's device did
        kill_tree(a)
        frozen = []
        given_up(a, b, inbox, drop)
        signal_tree(away, signal.SIGCONT)
        away = []
        shown = cli(b.config_path, "status")
        assert "1 feedback of unknown fate" in shown.stdout and drop in shown.stdout, shown.stdout + shown.stderr
        listed = cli(b.config_path, "drops")
        assert any(drop in line and "unknown" in line for line in listed.stdout.splitlines()), listed.stdout
        decided = cli(b.config_path, "feedback", "--project", "p1", drop, "--resend")
        assert decided.returncode == 0 and decided.stdout.startswith("pending: "), decided.stdout + decided.stderr
        wait_until(lambda: ack_row(a, drop)[0] == "sent", timeout=60, message="B to send it at the operator's word")
        [sent] = sent_of(a, drop)  # once, by B
        assert sent["node"] == "vps-b" and ack_row(a, drop)[1:3] == (sent["id"], "vps-b")
        again = cli(b.config_path, "feedback", "--project", "p1", drop, "--resend")
        assert again.returncode == 1 and "no feedback of unknown fate" in again.stderr  # decided once
        assert [f["outcome"] for f in fates(b)] == ["unknown"]  # not judged again after the operator's word
    finally:
        signal_tree(away + frozen, signal.SIGCONT)
        b.stop()
        a.stop()
