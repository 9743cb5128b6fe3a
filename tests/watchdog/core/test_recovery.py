"""One program's recovery records without processes: a restart and the healthy answer after it are recorded
with their delays and counted once; nothing is recorded when no recovery is in progress."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.watchdog.fakes import bench
from watchdog.core.recovery import Recoveries


def test_a_recovery_is_recorded_from_its_failure_to_healthy(tmp_path: Path) -> None:
    async def scenario() -> None:
        b = bench(tmp_path)
        recoveries = Recoveries("bridge:main", b.records("bridge:main"), b.metrics)
        recoveries.restarted(11, time.monotonic(), promoted=False)  # a first start: not a recovery
        recoveries.healthy(11)
        recoveries.begin("exit", "SIGKILL", 11)
        recoveries.delayed(0.25)
        recoveries.restarted(12, time.monotonic(), promoted=True)
        recoveries.healthy(12)
        recoveries.healthy(12)  # the recovery is over: a second healthy answer records nothing
        await asyncio.sleep(0)  # records are written right after the callback
        restart, healthy = list(b.log.read())
        assert (restart["event"], restart["pid"], restart["new_pid"], restart["delay_ms"], restart["standby"]) == \
            ("restart", 11, 12, 250.0, True)
        assert healthy["event"] == "healthy" and healthy["cause"] == "SIGKILL" and healthy["downtime_ms"] >= 0
        assert recoveries.count == 1 and len(recoveries.times) == 1 and recoveries.last_cause == "SIGKILL"
        assert b.metrics.restarts == [("bridge:main", "exit")] and len(b.metrics.recoveries) == 1
    asyncio.run(scenario())
