"""Two hosts watching one number (issue 21): two `wa-watchdog run` trees with their own data dirs and node
names, each its own linked device on one simulator, sharing one PostgreSQL.

Fault 1, host A killed (kill -9 of its whole tree at once) while drops are posted at 5/s: every drop
recorded once, every acknowledgement reaches the group once, B takes over sending at once (A's connections
were reset with its processes), and no device ever had two connections. Fault 2, A's whole tree paused
(SIGSTOP) past its lease, then resumed: B takes over within lease + 1 s, and A, resumed, sends and marks
nothing. Fault 5, PostgreSQL restarted (fast and immediate shutdown) under both. Fault 6, a rolling
upgrade (stop A, start A, stop B, start B) while drops are posted. The hosts are process trees, not network
namespaces: a kill resets A's connections and a pause silences them whatever namespace they live in (the
partitions of faults 3 and 4 need namespaces: tests/test_cluster_partitions.py).
"""
from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import suppress
from datetime import datetime
from pathlib import Path

import psutil
import pytest

from monitors.store.lease import SenderLease, grants
from monitors.store.postgres import PostgresBackend
from scripts.benchmarks.chaos_cluster_checks import History, sent_tokens
from scripts.benchmarks.cluster_run import CLUSTER, Poster, holder, kill_tree, signal_tree, tree, two_hosts
from scripts.benchmarks.system_run import PHONE, RunningSystem, config_text, group_jid, http, slow_start
from tests.conftest import wait_until
from tests.pg import PgCluster
from watchdog.components import load
from watchdog.shared.recovery_log import RecoveryLog

def takeovers(system: RunningSystem) -> list[dict]:
    """The host's recovery log: `lease` events that took a lease over from another host."""
    log = RecoveryLog(load(system.config_path).watchdog.recovery_log)
    return [r for r in log.read() if r.get("event") == "lease" and r.get("change") == "taken_over"]


def sent_status(system: RunningSystem) -> int:
    return (system.query("drops", "SELECT COUNT(*) FROM feedback WHERE status = 'sent'") or [(-1,)])[0][0]


def devices(system: RunningSystem) -> dict[str, dict]:
    numbers = http("GET", f"{system.sim_url}/sim/sessions")
    return {d["node"]: d for d in numbers[PHONE]["devices"]}  # type: ignore[index]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_host_a_killed_while_drops_are_posted_loses_nothing_and_sends_nothing_twice(tmp_path: Path,
                                                                                     pg_url: str) -> None:
    a, b = two_hosts(tmp_path, pg_url)
    poster = Poster(a)
    posted = poster.posted
    try:
        poster.post(10)
        wait_until(lambda: sent_status(a) >= 3, timeout=30, message="A to send the first acknowledgements")
        kill_tree(a)
        killed = time.monotonic()
        wait_until(lambda: holder(pg_url) == "vps-b", timeout=5, message="B to take the sender lease")
        takeover = time.monotonic() - killed
        poster.post(15)
        wait_until(lambda: a.query("drops", "SELECT COUNT(*) FROM drops") == [(25,)] and sent_status(a) == 25,
                   timeout=60, message="every drop recorded and acknowledged by B")
        events = Counter(a.query("drops", "SELECT d.drop_number FROM drop_events e JOIN drops d ON d.id = e.drop_id"))
        assert events == Counter((drop,) for drop in posted)  # each once, though both hosts saw every message
        acks = Counter(s["text"].split()[1] for s in a.sent() if s["recipient"] == group_jid(1))
        assert acks == Counter(posted)  # every acknowledgement reached the group exactly once
        seen = devices(a)
        assert {node for node, d in seen.items() if d["connections"]} == {"vps-a", "vps-b"}
        assert all(d["stream_replaced"] == 0 for d in seen.values())  # never two connections of one device
        assert a.query("drops", "SELECT COUNT(*) FROM feedback WHERE status <> 'sent'") == [(0,)]
        # each host's bridge was handed only what that host claimed under its lease: B what it claimed (after the
        # takeover) less what A's bridge had sent before the kill (A posted it, did not mark it: B found A's copy,
        # monitors/fate.py), A at least the ones it marked sent; both only a send A's bridge never made
        handed = {system: {k for (k,) in system.query("messages", "SELECT idempotency_key FROM outbox")}
                  for system in (a, b)}
        claimed = {node: {k for (k,) in a.query("drops", "SELECT idempotency_key FROM feedback WHERE claimed_by = ?",
                                                node)} for node in ("vps-a", "vps-b")}
        found = {k for (k,) in a.query("drops", "SELECT idempotency_key FROM feedback WHERE claimed_by = 'vps-b' "
                                                "AND handed_by = 'vps-a'")}
        assert handed[b] == claimed["vps-b"] - found and claimed["vps-a"] <= handed[a]
        assert handed[a] | handed[b] == {k for (k,) in a.query("drops", "SELECT idempotency_key FROM feedback")}
        assert len(handed[a] & handed[b]) <= 2, f"{len(handed[a] & handed[b])} sends A's bridge never made"
        assert a.query("drops", "SELECT COUNT(*) FROM feedback WHERE status = 'unknown'") == [(0,)]
        assert takeover < 1.0, f"B took {takeover:.2f} s to hold the lease after A was killed"
        [taken] = wait_until(lambda: takeovers(b), timeout=10, message="B's recovery log to record the takeover")
        assert (taken["account"], taken["node"], taken["previous"]) == ("main", "vps-b", "vps-a")
        assert taken["gap_s"] < 2  # A had renewed within its lease when it died
    finally:
        b.stop()
        a.stop()


def asked_for_the_lease(pg_url: str, node: str) -> bool:
    """The node's lease session last ran ACQUIRE (superuser view of pg_stat_activity): it looks for the lease
    (while it holds one it runs RENEW)."""
    reader = PostgresBackend(pg_url, "wa_watchdog")
    try:
        return bool(reader.rows("SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'wa-watchdog lease "
                                f"{node} %' AND state = 'idle' AND query LIKE '%INSERT INTO sender_leases%'"))
    finally:
        reader.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_paused_host_sends_and_marks_nothing_after_its_lease_was_taken_over(tmp_path: Path, pg_url: str) -> None:
    a, b = two_hosts(tmp_path, pg_url)
    poster = Poster(a)
    paused: list[psutil.Process] = []
    try:
        poster.post(10)
        wait_until(lambda: sent_status(a) >= 3, timeout=30, message="A to send the first acknowledgements")
        paused = tree(a)
        signal_tree(paused, signal.SIGSTOP)  # a frozen VM: nothing closed, nothing answered
        frozen = time.monotonic()
        wait_until(lambda: holder(pg_url) == "vps-b", timeout=10, message="B to take the sender lease")
        takeover = time.monotonic() - frozen
        poster.post(10)
        wait_until(lambda: sent_status(a) == 20, timeout=60, message="B to acknowledge every drop")
        before = devices(a)["vps-a"]
        by_a = {s["id"] for s in a.sent() if s["node"] == "vps-a"}
        signal_tree(paused, signal.SIGCONT)
        paused = []
        wait_until(lambda: asked_for_the_lease(pg_url, "vps-a"), timeout=30,
                   message="A, resumed, to find its lease gone and ask for it again")
        poster.post(5)
        wait_until(lambda: sent_status(a) == 25, timeout=60, message="B to acknowledge the drops after A resumed")
        after = devices(a)["vps-a"]
        assert {s["id"] for s in a.sent() if s["node"] == "vps-a"} == by_a  # A sent nothing new after resuming
        assert after["resent"] == before["resent"]  # A's bridge sent nothing on resuming: its outbox is fenced
        acks = Counter(s["text"].split()[1] for s in a.sent() if s["recipient"] == group_jid(1))
        assert acks == Counter(poster.posted)  # every acknowledgement once
        tokens = dict(a.query("drops", "SELECT claimed_by, MAX(claim_token) FROM feedback GROUP BY claimed_by"))
        assert tokens["vps-b"] > tokens.get("vps-a", 0)
        assert holder(pg_url) == "vps-b" and all(d["stream_replaced"] == 0 for d in devices(a).values())
        assert takeover < 2 + 1.0, f"B took {takeover:.2f} s to hold the lease of a paused A (lease_s 2)"
        [taken] = takeovers(b)
        assert (taken["previous"], taken["token"]) == ("vps-a", tokens["vps-b"]) and 2 <= taken["gap_s"] < 3
    finally:
        signal_tree(paused, signal.SIGCONT)
        b.stop()
        a.stop()


A_PACED = ("pace = { per_minute = 0, per_hour = 0, per_day = 0, reactions_per_minute = 0, chat_gap_s = 600, "
           "chat_jitter_s = 0, typing = false, ramp_s = 0 }")  # A's bridge sends one ack, then queues the rest


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_what_a_paused_hosts_bridge_held_queued_goes_out_once_through_the_new_holder(tmp_path: Path,
                                                                                      pg_url: str) -> None:
    """The outbox's fence (bridge/fence.py): A's bridge holds acknowledgements queued by its pace when A is paused
    past its lease. Resumed, it sends none of them (their token was superseded): it withdraws them, A's monitor
    gives them back, and B, the holder now, sends each once."""
    a, b = two_hosts(tmp_path, pg_url, pace_a=A_PACED)
    poster = Poster(a)
    paused: list[psutil.Process] = []
    try:
        poster.post(5)
        wait_until(lambda: a.query("drops", "SELECT COUNT(*) FROM feedback WHERE status = 'queued'") == [(4,)],
                   timeout=30, message="A's bridge to queue four acknowledgements behind its pace")
        held = a.query("messages", "SELECT message_id FROM outbox WHERE status = 'pending'")
        assert len(held) == 4 and all(token for (token,) in a.query("messages", "SELECT fence_token FROM outbox"))
        paused = tree(a)
        signal_tree(paused, signal.SIGSTOP)
        wait_until(lambda: holder(pg_url) == "vps-b", timeout=10, message="B to take the sender lease")
        poster.post(5)
        wait_until(lambda: sent_status(a) == 6, timeout=60, message="B to acknowledge the drops posted meanwhile")
        by_a = {s["id"] for s in a.sent() if s["node"] == "vps-a"}
        signal_tree(paused, signal.SIGCONT)
        paused = []
        wait_until(lambda: sent_status(a) == 10, timeout=60,
                   message="the acknowledgements A's bridge held to be given back and sent by B")
        assert {s["id"] for s in a.sent() if s["node"] == "vps-a"} == by_a  # A sent nothing after resuming
        assert sorted(a.query("messages", "SELECT message_id FROM outbox WHERE status = 'withdrawn'")) == sorted(held)
        acks = Counter(s["text"].split()[1] for s in a.sent() if s["recipient"] == group_jid(1))
        assert acks == Counter(poster.posted)  # every acknowledgement once
        assert all(d["resent"] == 0 and d["stream_replaced"] == 0 for d in devices(a).values())
        assert holder(pg_url) == "vps-b"
    finally:
        signal_tree(paused, signal.SIGCONT)
        b.stop()
        a.stop()


@pytest.fixture(scope="class")
def restarted_hosts(tmp_path_factory: pytest.TempPathFactory,
                    pg_cluster: PgCluster) -> Iterator[tuple[RunningSystem, RunningSystem, Poster, str]]:
    """One two-host system (and its poster, its database's URL) for both PostgreSQL restart modes: each mode posts
    its own drops on it, from a healthy cluster it checks first (two hosts start in ~10 s on a loaded machine)."""
    pg_url = pg_cluster.create_database("t_cluster_postgresql_restarted")
    a, b = two_hosts(tmp_path_factory.mktemp("restarted"), pg_url)
    try:
        yield a, b, Poster(a), pg_url
    finally:
        b.stop()
        a.stop()


@pytest.mark.slow
@pytest.mark.timeout(300)
class TestPostgresqlRestarted:
    """Both modes on one two-host system (`restarted_hosts`, ended after the class, not idling through the module)."""

    @pytest.mark.parametrize("mode", ["fast", "immediate"])
    def test_postgresql_restarted_under_both_hosts_loses_nothing_and_sends_nothing_twice(
            self, restarted_hosts: tuple[RunningSystem, RunningSystem, Poster, str], pg_cluster: PgCluster,
            mode: str) -> None:
        """Fault 5: every session of both hosts ends at once (leases included); both reconnect, one sends."""
        a, b, poster, pg_url = restarted_hosts
        before = len(poster.posted)  # the other mode's drops, if it ran first: each acknowledged, both hosts up
        wait_until(lambda: a.all_healthy() and b.all_healthy() and sent_status(a) == before and
                   holder(pg_url) in ("vps-a", "vps-b"), timeout=60,
                   message="a healthy cluster: both hosts up, one holding the lease, every earlier drop acknowledged")
        poster.post(10)
        wait_until(lambda: sent_status(a) >= before + 3, timeout=30, message="the first acknowledgements to go")
        pg_cluster.restart(mode)
        poster.post(10)
        wait_until(lambda: a.query("drops", "SELECT COUNT(*) FROM drops") == [(before + 20,)] and
                   sent_status(a) == before + 20, timeout=90,
                   message="every drop recorded and acknowledged after PostgreSQL came back")
        events = Counter(a.query("drops", "SELECT d.drop_number FROM drop_events e JOIN drops d ON d.id = e.drop_id"))
        assert events == Counter((drop,) for drop in poster.posted)  # each once
        acks = Counter(s["text"].split()[1] for s in a.sent() if s["recipient"] == group_jid(1))
        assert acks == Counter(poster.posted)  # each acknowledgement once
        assert holder(pg_url) in ("vps-a", "vps-b")
        assert all(d["stream_replaced"] == 0 for d in devices(a).values())


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_rolling_upgrade_loses_nothing_and_sends_nothing_twice(tmp_path: Path, pg_url: str) -> None:
    """Fault 6: stop A, start A, stop B, start B, while drops are posted at 5/s throughout."""
    a, b = two_hosts(tmp_path, pg_url)
    poster = Poster(a)
    posting = threading.Thread(target=poster.post, args=(60,))
    try:
        posting.start()
        a.stop(sim=False)  # the simulator (WhatsApp) stays
        a.start()
        b.stop()
        b.start()
        posting.join()
        assert len(poster.posted) == 60
        wait_until(lambda: a.query("drops", "SELECT COUNT(*) FROM drops") == [(60,)] and sent_status(a) == 60,
                   timeout=90, message="every drop recorded and acknowledged after the upgrade")
        events = Counter(a.query("drops", "SELECT d.drop_number FROM drop_events e JOIN drops d ON d.id = e.drop_id"))
        assert events == Counter((drop,) for drop in poster.posted)  # each once
        acks = Counter(s["text"].split()[1] for s in a.sent() if s["recipient"] == group_jid(1))
        assert acks == Counter(poster.posted)  # each acknowledgement once
        assert all(d["stream_replaced"] == 0 for d in devices(a).values())
        assert not takeovers(a) and not takeovers(b)  # every change of sender was a handover
    finally:
        posting.join()
        b.stop()
        a.stop()


MONITOR = "monitor:p1"
A_TRICKLE = ("pace = { per_minute = 0, per_hour = 0, per_day = 0, reactions_per_minute = 0, chat_gap_s = 0.3, "
             "chat_jitter_s = 0, typing = false, ramp_s = 0 }")  # A's bridge sends one ack every 0.3 s


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_holders_bridge_sends_nothing_under_its_token_once_the_monitor_keeping_it_died(tmp_path: Path,
                                                                                         pg_url: str) -> None:
    """A's monitor dies alone (a crash; its watchdog held back from restarting it): its lease session is reset
    and B takes over at once, while A's bridge lives on with acknowledgements queued under A's token. The
    bridge must not go on sending them until the validity the dead keeper last gave it runs out: each send is
    judged by its token (A's outbox) against the lease's grants (sender_lease_grants), as chaos --cluster does."""
    a, b = two_hosts(tmp_path, pg_url, pace_a=A_TRICKLE)
    poster = Poster(a, rate=50)  # faster than A's bridge sends
    watchdog = psutil.Process(a.proc.pid)  # type: ignore[union-attr]
    try:
        poster.post(30)
        wait_until(lambda: a.query("messages", "SELECT COUNT(*) FROM outbox WHERE status = 'pending'")[0][0] >= 10,
                   timeout=30, message="A's bridge to hold acknowledgements queued behind its pace")
        monitor = a.pid(MONITOR)
        assert monitor is not None
        watchdog.suspend()  # nothing restarts A's monitor meanwhile
        os.kill(monitor, signal.SIGKILL)
        wait_until(lambda: holder(pg_url) == "vps-b", timeout=10, message="B to take the sender lease at once")
        wait_until(lambda: sent_status(a) + a.query("drops", "SELECT COUNT(*) FROM feedback WHERE status = "
                                                             "'queued'")[0][0] == 30, timeout=60,
                   message="every acknowledgement sent, or held queued by A's bridge for B to take over")
        history = History.read(pg_url)
        tokens = sent_tokens(a)
        stale = [(s["text"], why) for s in a.sent() if s["node"] == "vps-a"
                 for _, why in [history.superseding("vps-a", tokens.get(s["id"]),
                                                    datetime.fromisoformat(s["time"]).timestamp())] if why]
        assert stale == [], f"A's bridge sent under its token after B's grant: {stale}"
    finally:
        if watchdog.status() == psutil.STATUS_STOPPED:
            watchdog.resume()
        b.stop()
        a.stop()


def take_over(lease: SenderLease, within: float) -> int | None:
    """B looking again and again, as fast as it can, for up to `within` seconds: its token, or None."""
    deadline = time.monotonic() + within
    while (token := lease.acquire()) is None and time.monotonic() < deadline:
        pass
    return token


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_holder_stopping_cleanly_has_its_bridge_withdraw_what_it_holds_before_the_next_grant(
        tmp_path: Path, pg_url: str) -> None:
    """A clean stop releases the lease, and the other host may take it at its very next look: A's bridge must have
    heard "lost" before that, or it sends what it holds under the old token after the new grant (chaos --cluster
    saw one, 35 ms after it, in a rolling upgrade). A's bridge is held still while its monitor stops, so that the
    order shows: B, looking as fast as it can, gets nothing until the bridge has heard."""
    a = RunningSystem(tmp_path / "a", slow_start(config_text(1, database_url=pg_url, pace=A_TRICKLE))
                      + CLUSTER.format("vps-a", 5.0), database_url=pg_url)
    a.start()
    b = SenderLease(pg_url, "wa_watchdog", "main", "vps-b", 5.0)
    stopped: list[psutil.Process] = []
    try:
        wait_until(lambda: holder(pg_url) == "vps-a", timeout=30, message="A to hold the sender lease")
        Poster(a, rate=50).post(30)
        wait_until(lambda: a.query("messages", "SELECT COUNT(*) FROM outbox WHERE status = 'pending'")[0][0] >= 10,
                   timeout=30, message="A's bridge to hold acknowledgements queued behind its pace")
        monitor, bridge = a.pid(MONITOR), a.pid("bridge:main")
        assert monitor is not None and bridge is not None
        stopped = [psutil.Process(a.proc.pid), psutil.Process(bridge)]  # type: ignore[union-attr]
        for process in stopped:  # the watchdog restarts nothing; the bridge hears nothing yet
            process.suspend()
        os.kill(monitor, signal.SIGTERM)  # a clean stop of the monitor keeping the lease (lease_s 5)
        assert take_over(b, within=2.0) is None, "B got the lease before A's bridge heard it was lost"
        psutil.Process(bridge).resume()
        assert take_over(b, within=10.0) == 2 and grants(b.db, "main")[-1].how == "released"
        assert a.query("messages", "SELECT COUNT(*) FROM outbox WHERE status = 'pending' AND fence_token = 1") \
            == [(0,)]  # all it held under token 1 withdrawn before B's grant
    finally:
        for process in stopped:
            with suppress(psutil.NoSuchProcess):
                process.resume()
        b.close()
        a.stop()
