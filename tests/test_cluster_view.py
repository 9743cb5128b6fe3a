"""A host of a cluster that stops (issue 21) is alerted on once by the other: two real hosts on one
PostgreSQL; A stopped; B's processes (its monitor's and its drops-api's lease keepers) record one `node_silent`
for A after `node_silent_s` however often they look, and B's `status` shows A silent and B holding the lease."""
from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.conftest import wait_until
from tests.monitor_support import cli
from tests.test_cluster import two_hosts
from watchdog.components import load
from watchdog.shared.recovery_log import RecoveryLog

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def silences(config_path: Path) -> list[dict]:
    return [r for r in RecoveryLog(load(config_path).watchdog.recovery_log).read() if r.get("event") == "node_silent"]


def looked_again_since_alerting(pg_url: str) -> bool:
    """B's lease was renewed at least 3 s after it recorded the silence: its keepers looked several times since."""
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT max(l.renewed_at) - max(s.alerted_at) > interval '3 seconds' FROM "
                           "wa_watchdog.sender_leases l, wa_watchdog.cluster_silences s WHERE l.holder = 'vps-b'"
                           ).fetchone()
    return bool(row and row[0])


def test_a_stopped_host_is_alerted_on_once_by_the_other(tmp_path: Path, pg_url: str) -> None:
    a, b = two_hosts(tmp_path, pg_url)  # lease_s = 2: node_silent_s defaults to 6 s
    try:
        a.stop(sim=False)  # a clean stop: B takes the lease over at once, and A falls silent
        wait_until(lambda: silences(b.config_path), timeout=60, message="B to alert on A's silence")
        wait_until(lambda: looked_again_since_alerting(pg_url), timeout=30, message="B's keepers to look again")
        [silence] = silences(b.config_path)
        assert (silence["node"], silence["seen_by"]) == ("vps-a", "vps-b") and silence["silent_s"] >= 6
        status = cli(b.config_path, "status")
        assert status.returncode == 0, status.stderr
        rows = {line.split()[0]: line.split() for line in status.stdout.splitlines() if line.startswith("  ")}
        assert rows["vps-a"][-1] == "silent" and rows["vps-b"][-1] == "seen"
        assert rows["main"][1:3] == ["vps-b", "2"]  # B took over from A's token 1
    finally:
        b.stop()
        a.stop()
