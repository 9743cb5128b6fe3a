"""The bounded chaos run (about a minute): kill -9 the bridge and monitors, drop the connection; lose nothing."""
from __future__ import annotations

from pathlib import Path

import pytest

from scripts.benchmarks.chaos import CHAOS_WATCHDOG, run_chaos
from scripts.benchmarks.system_run import RunningSystem, config_text

PROJECTS = 3


@pytest.mark.timeout(240)
def test_every_drop_once_every_ack_once_and_outage_drops_backfilled(tmp_path: Path) -> None:
    system = RunningSystem(tmp_path, config_text(PROJECTS, CHAOS_WATCHDOG))
    system.start()
    try:
        report = run_chaos(system, seconds=40, kill_every=2.0, rate=5, projects=PROJECTS, seed=20261124)
    finally:
        assert system.stop() == 0
    print(report.table())
    assert report.posted >= 150
    assert report.missed == []
    assert report.duplicated == []
    assert report.misattributed == []
    assert report.ack_missing == []
    assert report.ack_duplicates == []
    assert report.not_backfilled == []
    # The run really was chaotic: both kinds of process died, outages happened and drops were posted in them.
    assert report.kills["bridge:main"] >= 2 and sum(report.kills.values()) - report.kills["bridge:main"] >= 2
    assert report.windows >= 2 and report.outage_posts >= 5
