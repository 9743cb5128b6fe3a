"""The bounded chaos runs: kill -9 the bridge and monitors, drop the connection (and, on PostgreSQL, crash the
database half way); lose nothing, record nothing twice."""
from __future__ import annotations

from pathlib import Path

import pytest

from scripts.benchmarks.chaos import Report, chaos_config, run_chaos
from scripts.benchmarks.system_run import RunningSystem
from scripts.benchmarks.webhook_receiver import WebhookReceiver
from tests.pg import PgCluster

PROJECTS = 3


def chaos(tmp_path: Path, seconds: float, database_url: str = "", postgres: PgCluster | None = None,
          rate: float = 5, quiesce_timeout: float = 90.0) -> Report:
    receiver = WebhookReceiver()
    receiver.start()
    system = RunningSystem(tmp_path, chaos_config(PROJECTS, receiver, database_url), database_url)
    try:
        system.start()
        report = run_chaos(system, receiver, seconds=seconds, kill_every=2.0, rate=rate, projects=PROJECTS,
                           seed=20261205, postgres=postgres, quiesce_timeout=quiesce_timeout)
    finally:
        assert system.stop() == 0
        receiver.close()
    print(report.table())
    assert report.posted >= seconds * rate * 0.7
    assert report.missed == []
    assert report.duplicated == []
    assert report.misattributed == []
    assert report.ack_missing == []
    assert report.ack_duplicates == []
    assert report.not_backfilled == []
    assert report.events_missing == [] and report.events_duplicated == []
    # Each drop's event reached the receiver, signed, (deduped by webhook-id) once; nothing for a drop not recorded.
    assert report.webhook_lost == [] and report.webhook_unknown == [] and report.webhook_bad_signatures == 0
    # The run really was chaotic: every kind of process died, outages happened and drops were posted in them.
    assert report.kills["bridge:main"] >= 2 and report.kills["drops-api"] >= 1
    assert sum(n for name, n in report.kills.items() if name.startswith("monitor:")) >= 2
    assert report.windows >= 2 and report.outage_posts >= 5
    return report


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_every_drop_once_every_ack_once_and_outage_drops_backfilled(tmp_path: Path) -> None:
    chaos(tmp_path, seconds=40)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_same_on_postgresql_crashed_half_way(tmp_path: Path, pg_cluster: PgCluster, pg_url: str) -> None:
    # 3 drops/s: on PostgreSQL each acknowledgement and each receipt is a round trip on the monitor's loop, and
    # at 5/s on a loaded 2-core machine the acknowledgements drained slower than they arrived.
    report = chaos(tmp_path, seconds=40, database_url=pg_url, postgres=pg_cluster, rate=3, quiesce_timeout=150)
    assert report.pg_restarts == 1
