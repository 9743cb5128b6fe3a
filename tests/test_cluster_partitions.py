"""Two hosts watching one number, each in its own network namespace (issue 21, faults 3 and 4): host A cut off
from PostgreSQL only, or from WhatsApp (the simulator) only, for 30 s, then healed.

PostgreSQL and the simulator run in the root namespace, reached by both hosts on the first veth pair's root-side
address (scripts/benchmarks/cluster_lab.py). A partition drops A's packets silently in A's own namespace: nothing is reset, so A
finds out only by its timeouts. Fault 3: A keeps storing what WhatsApp delivers, records nothing it cannot
record, B takes over sending within lease + 1 s, and after the heal A's monitors catch up from their cursors
while every drop stays recorded once. Fault 4: B records what A no longer receives, and every acknowledgement
still reaches the group once; A keeps the sender lease (it still reaches PostgreSQL), so the acknowledgements it
claims meanwhile wait in its bridge's durable outbox (`queued`) and go out, once, when it reconnects. In both: no device connected twice, no feedback `unknown`.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator

import psycopg
import pytest

from monitors.store.postgres import PostgresBackend, silence_bounds
from scripts.benchmarks.cluster_lab import Lab, LabUnavailable, cluster_lab, hosts
from scripts.benchmarks.cluster_run import Poster, holder
from scripts.benchmarks.system_run import RunningSystem, group_jid
from tests.conftest import wait_until
from tests.pg import PgCluster, find_bin_dir
from tests.test_cluster import devices, sent_status, takeovers

PARTITION_S = 30.0
LEASE_S = 2.0


@pytest.fixture(scope="module")
def shared_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, Poster]]:
    """One lab for the module's partitions (its set-up, PostgreSQL's initdb included, takes ~15 s on a loaded
    machine), and the one poster of its drops: each test posts drops of its own, numbered on."""
    bin_dir, why = find_bin_dir()
    if bin_dir is None:
        pytest.skip(why)
    try:
        with cluster_lab(tmp_path_factory.mktemp("lab"), bin_dir, LEASE_S) as made:
            yield made, Poster(made.a)
    except LabUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def lab(shared_lab: tuple[Lab, Poster]) -> Lab:
    """The shared lab as every test here starts: A holds the sender lease (a test before may have left it with B:
    B is stopped, A takes it at its next look, B started again), both hosts healthy, every drop posted so far
    recorded and acknowledged once."""
    made, poster = shared_lab
    if holder(made.pg_url) != "vps-a":
        made.b.stop()  # a clean stop releases B's lease
        wait_until(lambda: holder(made.pg_url) == "vps-a", timeout=30, message="A to take the sender lease")
        made.b.start()
    wait_until(lambda: made.a.all_healthy() and made.b.all_healthy(), timeout=60, message="both hosts healthy")
    assert holder(made.pg_url) == "vps-a"
    assert_exactly_once(made, poster)
    return made


@pytest.fixture
def poster(shared_lab: tuple[Lab, Poster]) -> Poster:
    return shared_lab[1]


def drops_posted(lab: Lab, poster: Poster) -> Counter:
    return Counter(lab.a.query("drops", "SELECT d.drop_number FROM drop_events e JOIN drops d ON d.id = e.drop_id"))


def acks(lab: Lab) -> Counter:
    return Counter(s["text"].split()[1] for s in lab.a.sent() if s["recipient"] == group_jid(1))


def unsettled(lab: Lab) -> int:
    """Feedback neither sent nor queued (handed to a bridge's durable outbox while it was cut off, which sends
    it on reconnect)."""
    return lab.a.query("drops", "SELECT COUNT(*) FROM feedback WHERE status NOT IN ('sent', 'queued')")[0][0]


def assert_exactly_once(lab: Lab, poster: Poster) -> None:
    n = len(poster.posted)
    wait_until(lambda: lab.a.query("drops", "SELECT COUNT(*) FROM drops") == [(n,)] and set(acks(lab)) >= set(
        poster.posted) and unsettled(lab) == 0, timeout=90, message=f"all {n} drops recorded and acknowledged")
    assert drops_posted(lab, poster) == Counter((drop,) for drop in poster.posted)  # each recorded once
    assert acks(lab) == Counter(poster.posted)  # each acknowledgement reached the group once
    assert all(d["stream_replaced"] == 0 for d in devices(lab.a).values())  # never two connections of one device


def stored_by(system: RunningSystem, drops: list[str]) -> set[str]:
    """The drops among `drops` whose messages are in the host's own messages.db."""
    texts = {text.split()[0] for (text,) in system.query("messages", "SELECT content FROM messages")}
    return texts & set(drops)


def cursor(lab: Lab, node: str) -> int:
    rows = lab.a.query("drops", "SELECT rowid FROM cursors WHERE project = 'p1' AND account = ?", f"main@{node}")
    return rows[0][0] if rows else 0


def last_rowid(system: RunningSystem, drop: str) -> int:
    rows = system.query("messages", "SELECT rowid FROM messages WHERE content LIKE ?", f"{drop} %")
    return rows[0][0] if rows else 0


def wait_out(cut_at: float) -> None:
    """The partition lasts PARTITION_S from `cut_at` (the fault's duration, not a wait for a condition)."""
    time.sleep(max(0.0, cut_at + PARTITION_S - time.monotonic()))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_host_cut_off_from_postgresql_keeps_its_messages_and_catches_up_exactly_once(lab: Lab,
                                                                                       poster: Poster) -> None:
    before, known = len(poster.posted), len(takeovers(lab.b))  # drops and takeovers of the tests before
    poster.post(10)
    wait_until(lambda: sent_status(lab.a) >= before + 3, timeout=30, message="A to send the first acknowledgements")
    monitor = lab.b.pid("monitor:p1")
    posting = threading.Thread(target=poster.post, args=(20,))
    posting.start()  # cut in the middle of the stream: A's transactions are cut off mid-way, locks held
    try:
        wait_until(lambda: lab.a.query("drops", "SELECT COUNT(*) FROM drops")[0][0] >= before + 12, timeout=30,
                   message="A and B to record the first drops of the stream")
        lab.a.host.cut(lab.a.host.outside, lab.pg.port)
        cut_at = time.monotonic()
        # while the stream goes on (waiting for the poster first measured its last 1.5-2 s as the takeover's)
        wait_until(lambda: holder(lab.pg_url) == "vps-b", timeout=10, message="B to take the sender lease")
        takeover = time.monotonic() - cut_at
    finally:
        posting.join()
    try:
        by_a = {s["id"] for s in lab.a.sent() if s["node"] == "vps-a"}
        during = [drop for drop, posted_at in zip(poster.posted, poster.times) if posted_at > cut_at]
        wait_until(lambda: sent_status(lab.a) == before + 30, timeout=60,
                   message="B to record and acknowledge every drop")
        wait_until(lambda: stored_by(lab.a, during) == set(during), timeout=30,
                   message="A to store the messages WhatsApp delivered while it could not reach PostgreSQL")
        wait_out(cut_at)
        assert cursor(lab, "vps-a") < last_rowid(lab.a, during[-1])  # A recorded nothing it could not record
    finally:
        lab.a.host.cut(lab.a.host.outside, lab.pg.port, cut=False)
    wait_until(lambda: cursor(lab, "vps-a") >= last_rowid(lab.a, during[-1]), timeout=60,
               message="A's monitors to catch up from their cursors after the heal")
    poster.post(5)
    assert_exactly_once(lab, poster)
    assert {s["id"] for s in lab.a.sent() if s["node"] == "vps-a"} == by_a  # A sent nothing after it lost the lease
    assert monitor is not None and lab.b.pid("monitor:p1") == monitor  # B's monitor never stalled into a restart
    [taken] = takeovers(lab.b)[known:]
    # the gap in sending, A's last renewal to B's grant on the database's clock: within lease + 1 s
    assert taken["previous"] == "vps-a" and taken["gap_s"] < LEASE_S + 1.0, taken
    # from the cut to this test seeing B hold the lease: A's last renewal came before the cut, B looks every 0.5 s
    assert takeover < LEASE_S + 1.0, f"B took {takeover:.2f} s to hold the lease of a partitioned A: {taken}"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_host_cut_off_from_whatsapp_loses_nothing_and_sends_nothing_twice(lab: Lab, poster: Poster) -> None:
    before = len(poster.posted)  # drops of the tests before
    poster.post(10)
    wait_until(lambda: sent_status(lab.a) >= before + 3, timeout=30, message="A to send the first acknowledgements")
    lab.a.host.cut(lab.a.host.outside, lab.relay.port)
    cut_at = time.monotonic()
    try:
        poster.post(10)
        wait_until(lambda: lab.a.query("drops", "SELECT COUNT(*) FROM drops") == [(before + 20,)], timeout=60,
                   message="B to record the drops A no longer receives")
        wait_out(cut_at)
    finally:
        lab.a.host.cut(lab.a.host.outside, lab.relay.port, cut=False)
    poster.post(5)
    assert_exactly_once(lab, poster)


@pytest.mark.timeout(120)
def test_postgresql_ends_a_cut_off_hosts_session_and_its_locks_about_lease_s_after_its_last_packet() -> None:
    """Where no takeover ends them (the silent host held no lease, or is another role), a cluster's session of a host
    cut off mid-transaction ends on the server about lease_s after its last packet (silence_bounds), and its lock
    with it; a session without those bounds keeps its lock (PostgreSQL's defaults: hours)."""
    bin_dir, why = find_bin_dir()
    if bin_dir is None:
        pytest.skip(why)
    with contextlib.ExitStack() as stack:
        try:
            (host,) = stack.enter_context(hosts(f"wb{os.getpid() % 100000}", 1))
        except LabUnavailable as exc:
            pytest.skip(str(exc))
        pg = PgCluster(bin_dir, settings=f"-c listen_addresses=127.0.0.1,{host.outside}")
        try:
            with open(pg.data / "pg_hba.conf", "a") as hba:  # a throwaway cluster: trust the veth subnet
                hba.write("host all all 169.254.0.0/16 trust\n")
            pg.start()
            url = pg.create_database("bounds")
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("CREATE TABLE locked (k int PRIMARY KEY); INSERT INTO locked VALUES (1), (2)")
            server, client = silence_bounds(LEASE_S)
            with host.entered():  # host A's sessions, in its namespace: one of a cluster, one with the defaults
                bounded = PostgresBackend(url.replace("127.0.0.1", host.outside), settings=server, **client)
                plain = psycopg.connect(url.replace("127.0.0.1", host.outside))
                bounded_tx = bounded.transaction()  # left open: the host is cut off inside it (a pipeline)
                bounded_tx.__enter__().rows("SELECT k FROM public.locked WHERE k = 1 FOR UPDATE")
                plain.execute("SELECT k FROM locked WHERE k = 2 FOR UPDATE")
            host.cut(host.outside, pg.port)
            cut_at = time.monotonic()
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("SET lock_timeout = '20s'")
                conn.execute("SELECT k FROM locked WHERE k = 1 FOR UPDATE")  # waits until A's bounded session ends
                freed = time.monotonic() - cut_at
                conn.execute("SET lock_timeout = '100ms'")
                with pytest.raises(psycopg.errors.LockNotAvailable):  # the plain session still holds its lock
                    conn.execute("SELECT k FROM locked WHERE k = 2 FOR UPDATE")
            assert freed < LEASE_S + 2.0, f"A's lock outlived its session's bound: {freed:.2f} s"
        finally:
            pg.destroy()
