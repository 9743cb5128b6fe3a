"""The sender lease with fencing (issue 21), on a real PostgreSQL: one holder at a time, tokens that only grow,
takeover after expiry or at once when the holder's session is gone, and a stale token's claim and mark refused."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone

import psycopg
import pytest

from monitors.drops_store import (FEEDBACK_PENDING, FEEDBACK_QUEUED, FEEDBACK_SENT, DropsDB, Fence, LeaseLost,
                                  open_drops_store)
from monitors.store import rejoin
from monitors.store.lease import SAFETY, SenderLease, grants, lease_states
from monitors.store.postgres import PostgresBackend
from tests.conftest import BASE_CONFIG, ROOT, wait_until
from monitors.store.fence import FENCE, WEBHOOKS, store_session_name
from monitors.store.outbox import FencedOutbox
from tests.monitors.test_drops_outbox import ack, at, sub
from tests.pg import PgCluster
from watchdog.components import load

ACCOUNT = "main"
SHORT = 1.5  # seconds: a lease that runs out within a test, long enough for a loaded machine's few statements


@pytest.fixture
def leases(pg_url: str) -> Iterator[Callable[..., SenderLease]]:
    """SenderLease(node, lease_s) on the test's database, each on its own connection; closed at the end."""
    made: list[SenderLease] = []

    def make(node: str, lease_s: float = 5.0, account: str = ACCOUNT) -> SenderLease:
        made.append(SenderLease(pg_url, "wa_watchdog", account, node, lease_s))
        return made[-1]
    yield make
    for lease in made:
        lease.close()


@pytest.fixture
def drops(write_config, pg_url: str) -> Iterator[DropsDB]:  # noqa: ANN001
    store = open_drops_store(load(write_config(BASE_CONFIG + f'\n[database]\nurl = "{pg_url}"\n')))
    yield store
    store.close()


def test_two_holders_contending_get_one_grant_at_a_time_and_the_token_only_grows(leases) -> None:  # noqa: ANN001
    a, b = leases("vps-a"), leases("vps-b")
    tokens: list[int] = []
    for _ in range(20):
        start = threading.Barrier(2)
        results: dict[str, int | None] = {}

        def contend(lease: SenderLease) -> None:
            start.wait()
            results[lease.node] = lease.acquire()
        threads = [threading.Thread(target=contend, args=(lease,)) for lease in (a, b)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        winners = [node for node, token in results.items() if token is not None]
        assert len(winners) == 1, results
        winner, loser = (a, b) if winners == ["vps-a"] else (b, a)
        assert loser.fence() is None and winner.fence() == Fence(ACCOUNT, winner.node, results[winner.node])
        tokens.append(results[winner.node])
        winner.release()
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)  # every grant a greater token


def test_takeover_after_expiry_with_a_greater_token(leases) -> None:  # noqa: ANN001
    a, b = leases("vps-a", lease_s=SHORT), leases("vps-b", lease_s=SHORT)
    first = a.acquire()
    assert first is not None and b.acquire() is None  # alive (its session is there) and not expired
    assert a.renew()
    begun = time.monotonic()
    second = wait_until(b.acquire, timeout=10, message="vps-b to take over the expired lease")
    assert time.monotonic() - begun >= SHORT * (1 - SAFETY)  # not before the renewed lease could expire
    assert second == first + 1
    assert not a.renew() and a.fence() is None  # an expired lease is never revived: A must acquire again
    assert a.acquire() is None  # and B holds it now
    [state] = lease_states(b.db)
    assert (state.holder, state.token, state.valid) == ("vps-b", second, True)


def test_a_stale_tokens_claim_and_mark_are_refused(leases, drops: DropsDB) -> None:  # noqa: ANN001
    first = sub("DR1000001", "M1")
    drops.record("lawley", "main", 1, [first, sub("DR1000002", "M2")], ack)
    a, b = leases("vps-a", lease_s=SHORT), leases("vps-b", lease_s=SHORT)
    a.acquire()
    stale = a.fence()
    claimed = drops.claim_feedback("lawley", stale, limit=1)
    assert [f.drop_number for f in claimed] == ["DR1000001"]
    assert drops.claim_feedback("lawley", Fence(ACCOUNT, "vps-b", stale.token)) == []  # not B's grant
    wait_until(b.acquire, timeout=10, message="vps-b to take over")
    # A wakes up believing it holds the lease: nothing it claims or marks counts any more
    assert drops.claim_feedback("lawley", stale) == []
    with pytest.raises(LeaseLost):
        drops.finish_feedback(claimed[0], FEEDBACK_SENT, bridge_message_id="3EB0A1", fence=stale)
    assert drops.feedback(claimed[0].id).status == FEEDBACK_PENDING
    assert drops.db.rows("SELECT COUNT(*) FROM events WHERE type = 'feedback.sent'") == [(0,)]
    mine = drops.claim_feedback("lawley", b.fence())
    assert [f.drop_number for f in mine] == ["DR1000001", "DR1000002"]
    done = drops.finish_feedback(mine[0], FEEDBACK_SENT, bridge_message_id="3EB0A2", fence=b.fence())
    assert (done.status, done.bridge_message_id) == (FEEDBACK_SENT, "3EB0A2")
    assert drops.db.rows("SELECT COUNT(*) FROM events WHERE type = 'feedback.sent'") == [(1,)]
    # a claim under the current token, marked after yet another takeover: refused too
    a_again = leases("vps-a", lease_s=SHORT)
    wait_until(a_again.acquire, timeout=10, message="vps-a to take the lease back")
    with pytest.raises(LeaseLost):
        drops.finish_feedback(mine[1], FEEDBACK_SENT, fence=Fence(ACCOUNT, "vps-b", b.token))
    assert drops.feedback(mine[1].id).status == FEEDBACK_PENDING


def test_a_holder_whose_processes_died_is_taken_over_at_once(leases, pg_url: str) -> None:  # noqa: ANN001
    """Its connection is reset with the process: no waiting out a 60 s lease."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom monitors.store.lease import SenderLease\n"
         f"lease = SenderLease({pg_url!r}, 'wa_watchdog', {ACCOUNT!r}, 'vps-a', 60)\n"
         "print(lease.acquire(), flush=True)\nsys.stdin.read()\n"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        token = int(child.stdout.readline())
        b = leases("vps-b", lease_s=60)
        assert b.acquire() is None  # A's session is alive: its lease stands
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        begun = time.monotonic()
        assert wait_until(b.acquire, timeout=5, message="vps-b to take over from a dead holder") == token + 1
        assert time.monotonic() - begun < 1.0
        assert b.takeover is not None and b.takeover.holder == "vps-a" and b.takeover.silent_s < 60
        assert b.takeover.ended == 0  # not expired: a dead process's session, its siblings' stay
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdin.close()
        child.stdout.close()


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_holder_whose_sessions_ended_with_a_postgresql_restart_is_not_taken_over_before_its_lease_runs_out(
        leases, pg_cluster: PgCluster, mode: str) -> None:  # noqa: ANN001
    """A restart ends every session, the holder's too, while the holder lives: its bridges go on sending under its
    token until its own deadline. Taken over as gone, the other host would send under a new token meanwhile (two
    senders); the holder reconnects and renews instead, and only its death or its lease's expiry hands over."""
    a, b = leases("vps-a", 60), leases("vps-b", 60)
    token = a.acquire()
    assert b.acquire() is None
    pg_cluster.restart(mode)
    wait_until(lambda: b.newest_token() is not None, timeout=30, message="vps-b to reconnect")
    assert b.acquire() is None  # A's session is gone with the old server, A is not
    assert wait_until(a.keep, timeout=10, message="vps-a to renew on a new session") == Fence(ACCOUNT, "vps-a", token)
    assert b.acquire() is None
    a.close()  # A's process dies now: its session is gone in this server's lifetime
    assert wait_until(b.acquire, timeout=5, message="vps-b to take over at once") == token + 1


def sessions_of(lease: SenderLease, session: str) -> int:
    return lease.db.rows("SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = ?", (session,))[0][0]


def test_a_holder_is_gone_when_its_last_process_keeping_the_lease_is(leases) -> None:  # noqa: ANN001
    a1, a2, b = leases("vps-a", 60), leases("vps-a", 60), leases("vps-b", 60)
    other = leases("vps-a", 60, account="backup")  # the node's lease of another account is no sibling of this one
    token = a1.acquire()
    other.acquire()
    assert a2.acquire() == token  # another process of the node holding it: the same grant
    assert b.acquire() is None
    a2.close()  # the last renewer's session is gone (its backend exits a moment after the goodbye)
    wait_until(lambda: sessions_of(b, a2.session) == 0, timeout=5, message="a2's backend to exit")
    assert b.acquire() is None and a1.renew()  # a1, of the same node, still keeps it: nothing to take over
    a1.close()
    assert wait_until(b.acquire, timeout=5, message="vps-b to take over from closed sessions") == token + 1
    assert b.takeover is not None and b.takeover.ended == 0  # not expired: nothing of vps-a's is ended
    assert sessions_of(b, other.session) == 1


def test_a_process_whose_siblings_keep_the_lease_releases_nothing(leases) -> None:  # noqa: ANN001
    """A monitor of the holding node restarting (a clean stop) hands nothing over: its siblings go on sending."""
    a1, a2, b = leases("vps-a", 60), leases("vps-a", 60), leases("vps-b", 60)
    token = a1.acquire()
    assert a2.acquire() == token
    assert a2.release() is False  # a1 keeps it: its bridges hear no "lost" from a2's keeper
    a2.close()
    assert a2.fence() is None and b.acquire() is None and a1.renew() and a1.fence() == Fence(ACCOUNT, "vps-a", token)
    assert a1.release() is True  # the node's last: handed over at once
    assert b.acquire() == token + 1 and b.takeover is None


def test_processes_of_a_node_stopping_together_hand_the_lease_over(leases) -> None:  # noqa: ANN001
    """The whole host stopping: each of its processes releases while the others are still connected; the last
    to look releases it (handed over, not taken over: no `lease_taken_over` for a clean stop)."""
    a1, a2, b = leases("vps-a", 60), leases("vps-a", 60), leases("vps-b", 60)
    token = a1.acquire()
    assert a2.acquire() == token
    assert a1.release() is False  # a2 still keeps it: nothing released
    assert b.acquire() is None
    assert a2.release() is True  # a1 is still connected, but leaving
    assert b.acquire() == token + 1 and b.takeover is None


def test_a_holder_that_cannot_renew_stops_sending_before_its_lease_can_expire(leases,  # noqa: ANN001
                                                                              pg_cluster: PgCluster) -> None:
    a = leases("vps-a", lease_s=2.0)
    started = time.monotonic()
    assert a.acquire() is not None
    [state] = lease_states(a.db)
    pg_cluster.stop("immediate")
    assert not a.renew() and a.fence() is not None  # the grant still runs, on the holder's own clock
    wait_until(lambda: a.fence() is None, timeout=5, message="the holder to stop sending")
    assert time.monotonic() - started < 2.0 * (1 - SAFETY) + 0.1  # well before the database's expiry
    pg_cluster.start()
    reader = PostgresBackend(a.db.url, "wa_watchdog")
    [after] = lease_states(reader)
    reader.close()
    assert (after.token, after.renewed_at) == (state.token, state.renewed_at)  # nobody renewed it meanwhile


def test_the_lease_is_judged_by_the_databases_clock_not_the_hosts(leases, fixed_clock) -> None:  # noqa: ANN001
    a, b = leases("vps-a", 30), leases("vps-b", 30)
    fixed_clock(datetime(2001, 1, 1, tzinfo=timezone.utc))
    token = a.acquire()
    fixed_clock(datetime(2099, 1, 1, tzinfo=timezone.utc))  # a host's clock a century ahead
    assert b.acquire() is None and a.renew() and a.fence() == Fence(ACCOUNT, "vps-a", token)
    fixed_clock(datetime(1999, 1, 1, tzinfo=timezone.utc))
    assert b.acquire() is None and a.renew()
    [state] = lease_states(a.db)
    assert state.valid and state.holder == "vps-a" and 0 <= state.renewed_ago_s < 5


def test_release_hands_over_at_the_next_look(leases) -> None:  # noqa: ANN001
    a, b = leases("vps-a", 60), leases("vps-b", 60)
    token = a.acquire()
    a.release()
    assert a.fence() is None and b.acquire() == token + 1
    assert b.takeover is None  # handed over, not taken over


def test_every_grant_is_kept_with_its_token_holder_time_and_how(leases) -> None:  # noqa: ANN001
    """The lease row keeps only the newest grant; the history keeps each one, by the database's clock: what a
    check of "sent under the current token" judges a send by (scripts/chaos --cluster)."""
    a, a2, b = leases("vps-a", SHORT), leases("vps-a", SHORT), leases("vps-b", SHORT)
    first = a.acquire()
    assert a2.acquire() == first  # joining the node's grant is no new grant
    a2.close()
    wait_until(lambda: sessions_of(b, a2.session) == 0, timeout=5, message="a2's backend to exit")
    assert a.release()
    assert b.acquire() == first + 1  # handed over
    wait_until(a.acquire, timeout=10, message="vps-a to take over the expired lease")
    a.close()  # A's session gone before its lease expired (its process died)
    b_again = leases("vps-b", 60)
    assert wait_until(b_again.acquire, timeout=5, message="vps-b to take over at once") == first + 3
    history = grants(b_again.db, ACCOUNT)
    assert [(g.token, g.holder, g.previous, g.how) for g in history] == [
        (first, "vps-a", None, "first"), (first + 1, "vps-b", "vps-a", "released"),
        (first + 2, "vps-a", "vps-b", "expired"), (first + 3, "vps-b", "vps-a", "holder_gone")]
    assert [g.acquired_at for g in history] == sorted(g.acquired_at for g in history)
    now = float(b_again.db.rows("SELECT EXTRACT(EPOCH FROM now())")[0][0])
    assert all(now - 60 < g.acquired_at <= now for g in history)  # the database's clock
    assert grants(b_again.db, "backup") == []


def test_webhooks_are_delivered_by_the_lease_holder_only_and_a_stale_mark_is_refused(leases,  # noqa: ANN001
                                                                                     drops: DropsDB) -> None:
    drops.record("lawley", "main", 1, [sub("DR1000001", "M1")], None)  # one drop.recorded event
    a, b = leases("vps-a", SHORT, account=WEBHOOKS), leases("vps-b", SHORT, account=WEBHOOKS)
    a.acquire()
    stale = a.fence()
    by_a, by_b = FencedOutbox(drops.outbox, a.fence), FencedOutbox(drops.outbox, b.fence)
    by_a.start("crm", "oldest")
    assert by_b.due("crm", now=at(10**6)) == []  # not B's to deliver
    [event] = by_a.due("crm", now=at(10**6))
    wait_until(b.acquire, timeout=10, message="vps-b to take over the webhooks")
    FencedOutbox(drops.outbox, lambda: stale).delivered("crm", event.seq)  # A wakes up believing it holds it
    assert drops.outbox.counts("crm").pending == 1  # its mark did not count
    [again] = by_b.due("crm", now=at(10**6))
    assert again.id == event.id  # delivered again with its stable webhook-id: at least once
    by_b.delivered("crm", again.seq)
    counts = drops.outbox.counts("crm")
    assert (counts.pending, counts.delivered) == (0, 1)


def test_a_takeover_ends_the_sessions_of_a_holder_paused_inside_a_transaction(leases, drops: DropsDB,  # noqa: ANN001
                                                                                pg_url: str) -> None:
    """Its row locks would hold the new holder's claims back, and its fenced mark, allowed before the takeover,
    would commit when it resumes: PostgreSQL cannot tell a paused client from a slow one."""
    drops.record("lawley", "main", 1, [sub("DR1000001", "M1")], ack)
    a, b = leases("vps-a", lease_s=SHORT), leases("vps-b", lease_s=SHORT)
    a.acquire()
    stale = a.fence()
    [claimed] = drops.claim_feedback("lawley", stale)
    paused = psycopg.connect(pg_url, application_name=store_session_name("vps-a"))  # A's drops store session
    try:
        with pytest.raises(psycopg.OperationalError):
            with paused.transaction():
                marked = paused.execute(
                    "UPDATE wa_watchdog.feedback SET status = 'sent' WHERE id = %s AND claim_token = %s AND "
                    + FENCE.replace("sender_leases", "wa_watchdog.sender_leases").replace("?", "%s") + " RETURNING id",
                    (claimed.id, stale.token, *stale.params)).fetchall()
                assert marked == [(claimed.id,)]  # allowed: A held the lease then; then A is paused, uncommitted
                wait_until(b.acquire, timeout=10, message="vps-b to take over")
                assert b.takeover is not None and b.takeover.ended == 2  # A's lease and drops store sessions
                mine = drops.claim_feedback("lawley", b.fence())  # not held back by A's row lock
        # A resumes: its COMMIT finds its session ended (the raise above); its mark never happened
    finally:
        paused.close()
    assert [f.id for f in mine] == [claimed.id] and drops.feedback(claimed.id).status == FEEDBACK_PENDING


def test_queued_acks_rejoin_a_new_message_only_under_the_current_token(leases, drops: DropsDB) -> None:  # noqa: ANN001
    drops.record("lawley", "main", 1, [sub("DR1000001", "M1"), sub("DR1000002", "M2"), sub("DR1000003", "M3")], ack)
    a, b = leases("vps-a", lease_s=SHORT), leases("vps-b", lease_s=SHORT)
    a.acquire()
    stale = a.fence()
    first, *later = drops.claim_feedback("lawley", stale)
    queued = drops.finish_feedback(first, FEEDBACK_QUEUED, bridge_message_id="3EB0A1", fence=stale)
    assert rejoin.queued_acks(drops, "lawley", first.recipient, stale) == [queued]
    joined = rejoin.rejoin(drops, [queued], later[:1], stale)  # the holder: the queued row joins the new one
    assert [(f.drop_number, f.status, f.carrier_id, f.bridge_message_id) for f in joined] == [
        ("DR1000001", FEEDBACK_PENDING, first.id, None), ("DR1000002", FEEDBACK_PENDING, first.id, None)]
    queued = drops.finish_feedback(joined[0], FEEDBACK_QUEUED, bridge_message_id="3EB0A2", fence=stale)
    wait_until(b.acquire, timeout=10, message="vps-b to take over")
    assert rejoin.queued_acks(drops, "lawley", first.recipient, b.fence()) == []  # not claimed under B's token
    with pytest.raises(LeaseLost):  # A wakes up believing it holds the lease: nothing is rejoined
        rejoin.rejoin(drops, [queued], later[1:], stale)
    assert (drops.feedback(first.id).status, drops.feedback(later[1].id).carrier_id) == (FEEDBACK_QUEUED, None)
