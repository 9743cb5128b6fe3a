"""The nodes of a cluster (issue 21) on a real PostgreSQL: each lease keeper renews its node's row by the
database's clock; a node silent for `[cluster] node_silent_s` is alerted on once by each other node (however
many of its processes look), again after it came back and fell silent anew, and never by a node that was itself
cut off; `status` and the console show the nodes and the leases."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from monitors import cluster_status
from monitors.console_view import DropsView
from monitors.config import ClusterConfig, DatabaseConfig
from monitors.lease_keeper import LeaseKeeper
from monitors.store import nodes
from monitors.store.postgres import PostgresBackend
from tests.conftest import BASE_CONFIG
from watchdog.components import load
from watchdog.shared.alerts import AlertManager
from watchdog.shared.recovery_log import RecoveryLog

SILENT_S = 3.0


@pytest.fixture
def keepers(pg_url: str, tmp_path: Path) -> Iterator[Callable[[str], LeaseKeeper]]:
    """LeaseKeeper(node) of account "main" on the test's database, recording into one recovery log."""
    made: list[LeaseKeeper] = []
    log = RecoveryLog(tmp_path / "recovery.jsonl")

    def make(node: str) -> LeaseKeeper:
        keeper = LeaseKeeper(DatabaseConfig(url=pg_url), ClusterConfig(node, lease_s=1.0, node_silent_s=SILENT_S),
                             "main", f"monitor:{node}", log, AlertManager([], log), lambda: None)
        made.append(keeper)
        return keeper
    yield make
    for keeper in made:
        keeper.lease.close()


def age(pg_url: str, node: str, seconds: float) -> None:
    """Move a node's last renewal back: as if it had not renewed for `seconds` (the database's clock)."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE wa_watchdog.cluster_nodes SET last_seen = now() - make_interval(secs => %s) "
                     "WHERE node = %s", (seconds, node))


def beat(keeper: LeaseKeeper, seeing_for: float = 10 * SILENT_S) -> list[tuple[str, float]]:
    """One look of the keeper, as one that has been renewing its own row for `seeing_for` seconds."""
    keeper._node_beat()  # noqa: SLF001 - first beat: the keeper starts seeing
    keeper._seeing_since -= seeing_for  # noqa: SLF001
    keeper._node_seen_at -= 0.7  # noqa: SLF001 - past the beat's pace (lease_s / 2), not a pause: beats now
    return keeper._node_beat()  # noqa: SLF001


def test_each_other_node_alerts_once_per_silence(keepers: Callable[[str], LeaseKeeper], pg_url: str,
                                                  tmp_path: Path) -> None:
    a, a2, b, c = keepers("vps-a"), keepers("vps-a"), keepers("vps-b"), keepers("vps-c")
    for keeper in (a, b, c):
        assert beat(keeper) == []  # all seen now: nobody is silent
    age(pg_url, "vps-c", SILENT_S + 1)
    found_a = beat(a)
    assert [node for node, _ in found_a] == ["vps-c"] and found_a[0][1] >= SILENT_S
    assert beat(a2) == []  # vps-a's other process: vps-a alerted already
    assert [node for node, _ in beat(b)] == ["vps-c"]  # vps-b alerts too, once
    assert beat(a) == [] and beat(b) == []
    beat(c)  # vps-c is back ...
    age(pg_url, "vps-c", SILENT_S + 2)  # ... and silent again: a new silence
    assert [node for node, _ in beat(a)] == ["vps-c"]

    a._report_silences(found_a)  # noqa: SLF001 - what the keeper's loop does with them
    records = [json.loads(line) for line in (tmp_path / "recovery.jsonl").read_text().splitlines()]
    assert [(r["event"], r["node"], r["seen_by"]) for r in records] == [("node_silent", "vps-c", "vps-a")]


def test_a_node_back_from_its_own_outage_does_not_judge_the_others(keepers: Callable[[str], LeaseKeeper],
                                                                     pg_url: str) -> None:
    """After PostgreSQL was away from everyone, every row is old: the first node back must not alert."""
    a, b = keepers("vps-a"), keepers("vps-b")
    beat(b)
    age(pg_url, "vps-b", SILENT_S + 1)
    assert a._node_beat() == []  # noqa: SLF001 - vps-a just started seeing: it cannot tell who was silent
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT node FROM wa_watchdog.cluster_nodes ORDER BY node").fetchall() == [
            ("vps-a",), ("vps-b",)]
        assert conn.execute("SELECT count(*) FROM wa_watchdog.cluster_silences").fetchone() == (0,)


def test_status_and_console_show_nodes_and_leases(keepers: Callable[[str], LeaseKeeper], pg_url: str,
                                                  write_config) -> None:  # noqa: ANN001
    a, b = keepers("vps-a"), keepers("vps-b")
    a.keep()  # vps-a takes the lease of "main" (token 1) and is seen
    b.keep()
    age(pg_url, "vps-b", SILENT_S + 5)
    config = load(write_config(BASE_CONFIG + f'\n[database]\nurl = "{pg_url}"\n[cluster]\nnode = "vps-b"\nlease_s = 1\n'
                               f'node_silent_s = {SILENT_S}\n'))
    [section] = cluster_status.sections(config)
    text = "\n".join(section.lines)
    assert "this host: vps-b" in text
    rows = {line.split()[0]: line for line in section.lines if line.startswith("  vps-")}
    assert rows["vps-a"].endswith("seen") and rows["vps-b"].endswith("silent")
    lease = next(line.split() for line in section.lines if line.startswith("  main"))
    assert lease[1:3] == ["vps-a", "1"] and "renewed" in text
    assert [n["node"] for n in section.data["nodes"]] == ["vps-a", "vps-b"]
    assert [(lease["account"], lease["holder"], lease["token"]) for lease in section.data["leases"]] == [
        ("main", "vps-a", 1)]
    html = DropsView(config).panel([])  # the console's drops panel, with the cluster first
    assert '<table class="cluster-nodes">' in html and "<td>vps-a</td><td>1</td>" in html
    assert html.index("cluster-nodes") < html.index('class="project"')


def test_no_cluster_no_section(write_config) -> None:  # noqa: ANN001
    assert cluster_status.sections(load(write_config(BASE_CONFIG))) == []


def test_an_unreachable_database_is_a_line_not_a_traceback(write_config) -> None:  # noqa: ANN001
    config = load(write_config(BASE_CONFIG + '\n[database]\nurl = "postgresql://wa@127.0.0.1:1/none"\n'
                               '[cluster]\nnode = "vps-a"\n'))
    [section] = cluster_status.sections(config)
    assert "cannot read the cluster" in section.lines[1] and section.data["problem"]


def test_the_node_store_functions_on_their_own(pg_url: str) -> None:
    db = PostgresBackend(pg_url)
    try:
        assert nodes.beat(db, "vps-a", 1.0) == []
        assert nodes.beat(db, "vps-a", 1.0, judge=False) == []
        [state] = nodes.node_states(db)
        assert state.node == "vps-a" and 0 <= state.seen_ago_s < 5 and state.first_seen <= state.last_seen
    finally:
        db.close()
