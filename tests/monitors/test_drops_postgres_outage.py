"""PostgreSQL dies mid-stream under a running system: monitors keep their place, say why they are unhealthy,
and catch up when it is back — every drop recorded once, acknowledged once, with one webhook event."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from scripts.benchmarks.system_run import CONTRACTORS, RunningSystem, config_text, group_jid
from tests.conftest import wait_until
from tests.pg import PgCluster

PROJECTS = 2


def unhealthy_monitors(system: RunningSystem) -> set[str]:
    return {c["name"] for c in system.status()
            if c["name"].startswith("monitor:") and "unhealthy: drops store unavailable" in (c["status_text"] or "")}


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_postgres_down_mid_stream_loses_nothing_and_records_nothing_twice(tmp_path: Path, pg_cluster: PgCluster,
                                                                          pg_url: str) -> None:
    system = RunningSystem(tmp_path, config_text(PROJECTS, database_url=pg_url), database_url=pg_url)
    system.start()
    posted: list[tuple[str, str]] = []

    def post(n: int) -> None:
        drop = f"DR{8000000 + n}"
        system.inject(group_jid(n % PROJECTS + 1), CONTRACTORS[n % len(CONTRACTORS)], f"{drop} installed")
        posted.append((f"p{n % PROJECTS + 1}", drop))

    def recorded() -> int:
        return (system.query("drops", "SELECT COUNT(*) FROM drops") or [(-1,)])[0][0]
    try:
        for n in range(10):
            post(n)
        wait_until(lambda: recorded() == 10, timeout=30, message="the first drops in PostgreSQL")
        pg_cluster.stop("immediate")  # a crash: no goodbye to the clients
        for n in range(10, 30):
            post(n)
        wait_until(lambda: unhealthy_monitors(system) == {"monitor:p1", "monitor:p2"}, timeout=30,
                   message="both monitors to report the drops store unavailable")
        pg_cluster.start()
        for n in range(30, 40):
            post(n)
        wait_until(lambda: recorded() == 40 and system.query(
            "drops", "SELECT COUNT(*) FROM feedback WHERE status = 'pending'") == [(0,)], timeout=60,
            message="every drop recorded and acknowledged after PostgreSQL came back")
        wait_until(lambda: not unhealthy_monitors(system), timeout=30, message="the monitors healthy again")
        rows = Counter(system.query("drops", "SELECT d.project, d.drop_number FROM drop_events e "
                                             "JOIN drops d ON d.id = e.drop_id"))
        assert rows == Counter(posted)  # none lost, none twice
        # (feedback.delivered / feedback.read follow as WhatsApp's receipts arrive: counted by the receipt tests)
        events = Counter(t for (t,) in system.query("drops", "SELECT type FROM events WHERE type IN "
                                                            "('drop.recorded', 'feedback.sent')"))
        assert events == {"drop.recorded": 40, "feedback.sent": 40}
        acks = Counter(s["text"].split()[1] for s in system.sent())
        assert acks == Counter(drop for _, drop in posted)  # every acknowledgement sent exactly once
        assert system.all_healthy()
    finally:
        system.stop()
