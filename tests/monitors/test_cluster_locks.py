"""A host whose peer went silent in the middle of a transaction (cut off from PostgreSQL, or paused: its row locks
stay while its session does) is neither stalled nor restarted by those locks (issue 21). Host B, a real
`wa-watchdog run`, records the same drop that A's open transaction inserted: B's insert waits on A's lock. B's
lease keeper, on a thread of its own, takes A's lease over within lease_s + 1 s of A's last renewal and ends A's
sessions; B then records the drop and sends its acknowledgement, once. B's monitor, which waited off its event
loop, kept its heartbeat all along: the watchdog never restarted it. Before, the wait blocked the monitor's loop
(and the lease keeper on it): no takeover, and the monitor restarted by its watchdog again and again.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from monitors.drops_store import NewFeedback, StoreUnavailable, Submission, open_drops_store
from monitors.store import nodes
from monitors.store.fence import store_session_name
from monitors.store.lease import RENEW_FRACTION, SenderLease
from monitors.store.postgres import PostgresBackend
from scripts.benchmarks.cluster_run import CLUSTER, holder
from scripts.benchmarks.system_run import CONTRACTORS, RunningSystem, config_text, group_jid
from tests.conftest import wait_until
from tests.test_cluster import takeovers
from watchdog.components import load

LEASE_S = 2.0
MONITOR = "monitor:p1"


def renewing(lease: SenderLease, stop: threading.Event) -> None:
    """Host A's lease keeper while A is alive."""
    while not stop.wait(LEASE_S * RENEW_FRACTION):
        lease.renew()


def waiting_on_a_lock(pg_url: str, node: str) -> bool:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        return bool(conn.execute("SELECT 1 FROM pg_stat_activity WHERE application_name = %s "
                                 "AND wait_event_type = 'Lock'", (store_session_name(node),)).fetchall())


def sessions_of(pg_url: str, name: str) -> int:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        return conn.execute("SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = %s",
                            (name,)).fetchall()[0][0]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_holder_gone_silent_inside_a_transaction_neither_stalls_nor_restarts_the_other_hosts_monitor(
        tmp_path: Path, pg_url: str) -> None:
    a_lease = SenderLease(pg_url, "wa_watchdog", "main", "vps-a", LEASE_S)  # host A holds the sender lease
    assert a_lease.acquire() == 1
    stop = threading.Event()
    keeper = threading.Thread(target=renewing, args=(a_lease, stop), daemon=True)
    keeper.start()
    b = RunningSystem(tmp_path, config_text(1, database_url=pg_url) + CLUSTER.format("vps-b", LEASE_S),
                      database_url=pg_url)
    b.start()
    a_store: psycopg.Connection | None = None
    try:
        b.inject(group_jid(1), CONTRACTORS[0], "DR7300000 installed")
        wait_until(lambda: b.query("drops", "SELECT COUNT(*) FROM feedback WHERE status = 'pending'") == [(1,)],
                   timeout=30, message="B to record the first drop (A holds the lease: its ack waits)")
        monitor = b.pid(MONITOR)
        # A, in the middle of recording the next drop when it went silent: its insert is not committed, its lock stays
        a_store = psycopg.connect(pg_url, application_name=store_session_name("vps-a"))
        a_store.execute("INSERT INTO wa_watchdog.drops (public_id, project, drop_number, group_jid, submitted_by, "
                        "message_id, message_time, detected_at) VALUES (gen_random_uuid(), 'p1', 'DR7300001', %s, %s, "
                        "'A-ONLY', now(), now())", (group_jid(1), CONTRACTORS[1]))
        b.inject(group_jid(1), CONTRACTORS[1], "DR7300001 installed")
        wait_until(lambda: waiting_on_a_lock(pg_url, "vps-b"), timeout=30,
                   message="B's insert of the same drop to wait on A's lock")
        stop.set()  # A's last renewal is behind it
        keeper.join()
        silent_at = time.monotonic()
        wait_until(lambda: holder(pg_url) == "vps-b", timeout=LEASE_S + 10, message="B to take the sender lease")
        took = time.monotonic() - silent_at
        wait_until(lambda: b.query("drops", "SELECT COUNT(*) FROM feedback WHERE status = 'sent'") == [(2,)],
                   timeout=30, message="B to record the drop A had locked and to acknowledge both")
        assert sessions_of(pg_url, store_session_name("vps-a")) == 0  # the takeover ended A's sessions
        assert b.query("drops", "SELECT drop_number FROM drops ORDER BY drop_number") == [("DR7300000",), ("DR7300001",)]
        assert "A-ONLY" not in {m for (m,) in b.query("drops", "SELECT message_id FROM drops")}  # A's never committed
        assert Counter(s["text"].split()[1] for s in b.sent()) == Counter(["DR7300000", "DR7300001"])
        [taken] = takeovers(b)
        assert taken["previous"] == "vps-a" and taken["gap_s"] < LEASE_S + 1.0, taken
        assert took < LEASE_S + 1.0, f"B held the lease {took:.2f} s after A's last renewal"
        assert b.pid(MONITOR) == monitor, "B's monitor was restarted while it waited on A's lock"
    finally:
        stop.set()
        if a_store is not None:
            a_store.close()
        a_lease.close()
        b.stop()


def acknowledged(b: RunningSystem) -> Counter:
    return Counter(s["text"].split()[1] for s in b.sent())


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_paused_non_holder_inside_a_transaction_holds_the_holders_recording_back_about_lease_s_not_its_pause(
        tmp_path: Path, pg_url: str) -> None:
    """Host A, not holding the lease, was recording a drop (the store's real, pipelined transaction: its insert
    done, its commit not sent) when it froze. Its kernel answers keepalives, so its session and locks stay; a
    pipelined transaction waiting for its client is "active", never "idle in transaction", so PostgreSQL's
    idle_in_transaction_session_timeout would not end it. Host B, holding the lease, records the same drop: its
    insert waits on A's lock. B's lease keeper ends A's stalled session once A's node has been silent lease_s;
    B records and acknowledges. When A resumes, its commit fails and its retry (what its monitor's with_store
    does) finds the drop recorded: one drop, one submission."""
    b = RunningSystem(tmp_path / "b", config_text(1, database_url=pg_url) + CLUSTER.format("vps-b", LEASE_S),
                      database_url=pg_url)
    b.start()
    a_path = tmp_path / "a.toml"
    a_path.write_text(config_text(1, database_url=pg_url) + CLUSTER.format("vps-a", LEASE_S))
    a_drops = open_drops_store(load(a_path))  # A's drops store session, named after its node, as its monitor's
    reader = PostgresBackend(pg_url)
    paused, resumed = threading.Event(), threading.Event()
    outcome: list[object] = []
    try:
        wait_until(lambda: holder(pg_url) == "vps-b", timeout=30, message="B to hold the sender lease")
        a_drops.cursor("p1", "main@vps-a")  # A's session connected before its node's last renewal below
        b_monitor = b.pid(MONITOR)
        assert b_monitor is not None
        os.kill(b_monitor, signal.SIGSTOP)  # B reads the message only once A is inside its transaction
        try:
            posted = b.inject(group_jid(1), CONTRACTORS[1], "DR7300002 installed")
            mine = Submission("DR7300002", group_jid(1), "Project 1", CONTRACTORS[1], posted["id"],
                              posted["timestamp"], False)

            def ack(sub: Submission) -> NewFeedback:  # inside A's transaction, after its insert: A freezes here
                paused.set()
                resumed.wait(120)
                return NewFeedback("ack", sub.group_jid, f"{sub.drop_number} received", (), f"a-{sub.message_id}")

            def record() -> None:
                try:
                    outcome.append(a_drops.record("p1", "main@vps-a", 1, [mine], ack))
                except StoreUnavailable as exc:
                    outcome.append(exc)
            recording = threading.Thread(target=record, daemon=True)
            recording.start()
            assert paused.wait(30), "A's recording did not reach its transaction"
            nodes.beat(reader, "vps-a", 60)  # A's last sign of life: its keeper froze with it
            silent_at = time.monotonic()
        finally:
            os.kill(b_monitor, signal.SIGCONT)
        wait_until(lambda: waiting_on_a_lock(pg_url, "vps-b") or acknowledged(b)["DR7300002"], timeout=30,
                   message="B's insert of the same drop to wait on A's lock")
        wait_until(lambda: acknowledged(b)["DR7300002"] == 1, timeout=LEASE_S + 30,
                   message="B to record and acknowledge the drop A's frozen transaction had locked")
        took = time.monotonic() - silent_at
        assert took < 2 * LEASE_S + 2.0, f"B recorded {took:.2f} s after A fell silent (lease_s {LEASE_S})"
        resumed.set()  # A resumes: its session was ended, its transaction rolled back
        recording.join(30)
        assert isinstance(outcome[0], StoreUnavailable), outcome
        assert a_drops.record("p1", "main@vps-a", 1, [mine], ack) == []  # A's retry: already B's drop
        assert b.query("drops", "SELECT COUNT(*) FROM drop_events e JOIN drops d ON d.id = e.drop_id "
                                "WHERE d.drop_number = 'DR7300002'") == [(1,)]  # one submission: B's
        assert b.query("drops", "SELECT f.status FROM feedback f JOIN drops d ON d.id = f.drop_id "
                                "WHERE d.drop_number = 'DR7300002'") == [("sent",)]
        assert acknowledged(b) == Counter(["DR7300002"])
        assert b.pid(MONITOR) == b_monitor, "B's monitor was restarted while it waited on A's lock"
    finally:
        resumed.set()
        a_drops.close()
        reader.close()
        b.stop()
