"""The bounded chaos runs: kill -9 the bridge, monitors and drops-api, drop the connection (and, on PostgreSQL,
crash the database half way), restore messages.db from a backup while WhatsApp queues; lose nothing, record
nothing twice, every drop's webhook event received."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from scripts.benchmarks.chaos import chaos_config, run_chaos
from scripts.benchmarks.chaos_report import Report
from scripts.benchmarks.chaos_restore import STOPPED_POSTS
from scripts.benchmarks.system_run import RunningSystem
from scripts.benchmarks.webhook_receiver import WebhookReceiver
from tests.pg import PgCluster

PROJECTS = 3
RATE = 5  # drops posted per second, on either store


def chaos(tmp_path: Path, seconds: float, database_url: str = "", postgres: PgCluster | None = None,
          faults: tuple[str, ...] = ("bridge", "monitor", "disconnect"),
          enough: Callable[[Report], bool] | None = None) -> Report:
    """`seconds` of blows, longer (up to twice) until `enough` holds: a loaded machine's blows take longer."""
    receiver = WebhookReceiver()
    receiver.start()
    separate_sim = "restore" in faults
    system = RunningSystem(tmp_path, chaos_config(PROJECTS, receiver, database_url, separate_sim), database_url,
                           separate_sim=separate_sim)
    try:
        system.start()
        report = run_chaos(system, receiver, seconds=seconds, kill_every=2.0, rate=RATE, projects=PROJECTS,
                           seed=20261205, postgres=postgres, faults=faults, enough=enough)
    finally:
        stopped = system.stop()
        receiver.close()
    print(report.table())
    assert stopped == 0
    assert report.unclean_stops == 0
    assert report.posted >= seconds * RATE * 0.7
    assert report.missed == []
    assert report.hangs == 0  # no blow hangs a child: none may be judged hung
    assert report.duplicated == []
    assert report.misattributed == []
    assert report.ack_missing == []
    assert report.ack_duplicates == []
    assert report.not_backfilled == []
    assert report.events_missing == [] and report.events_duplicated == []
    # Each drop's event reached the receiver, signed, (deduped by webhook-id) once; nothing for a drop not recorded.
    assert report.webhook_lost == [] and report.webhook_unknown == [] and report.webhook_bad_signatures == 0
    assert report.unreported_windows == []  # each reported by every project's monitor (by id and span)
    assert report.quiescent  # all of the above, and every window closed, backfilled and reported
    return report


def killed_enough(report: Report) -> bool:
    """Every kind of process died: the bridge twice, drops-api once, monitors twice."""
    return report.kills["bridge:main"] >= 2 and report.kills["drops-api"] >= 1 and \
        sum(n for name, n in report.kills.items() if name.startswith("monitor:")) >= 2


def assert_chaotic(report: Report) -> None:
    """The run really was chaotic: every kind of process died, outages happened and drops were posted in them."""
    assert killed_enough(report), report.kills
    assert report.windows >= 2 and report.outage_posts >= 5


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_every_drop_once_every_ack_once_and_outage_drops_backfilled(tmp_path: Path) -> None:
    assert_chaotic(chaos(tmp_path, seconds=24, enough=killed_enough))


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_same_on_postgresql_crashed_half_way(tmp_path: Path, pg_cluster: PgCluster, pg_url: str) -> None:
    report = chaos(tmp_path, seconds=30, database_url=pg_url, postgres=pg_cluster, enough=killed_enough)
    assert_chaotic(report)
    assert report.pg_restarts == 1


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_messages_db_restored_from_a_backup_loses_no_drop_posted_while_stopped(tmp_path: Path) -> None:
    """docs/OPERATIONS.md's "A corrupt store" with WhatsApp queuing for the stopped service (issue 19, item 1):
    the restored file numbers the replayed messages with rowids the monitors' cursors have passed, and its
    windows with ids the drops store has seen reported (chaos checks each window's report by id and span)."""
    report = chaos(tmp_path, seconds=22, faults=("restore", "bridge"),
                   enough=lambda r: r.restores >= 1 and r.kills["bridge:main"] >= 2)
    assert report.restores == 1  # at most one per RESTORE_EVERY s
    assert len(report.posted_while_stopped) >= STOPPED_POSTS * PROJECTS
    assert report.kills["bridge:main"] >= 2
