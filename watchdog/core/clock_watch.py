"""The watchdog notices a step of the host's wall clock and records it once in the recovery log.

NTP stepping the time, or a VM restored from a snapshot, moves every wall-clock time the system writes
after it: the recovery log says when and by how much, so times on either side of the record can be read
right. Nothing supervised depends on it: deadlines are monotonic, and the stores that compare times across
a step keep them on the boot's clock (see `watchdog.shared.clock`). The bridge and the drops-api notice the
same step for their own needs and only log it: one step, one record.
"""
from __future__ import annotations

import asyncio

from loguru import logger

from watchdog.shared import clock
from watchdog.shared.recovery_log import RecoveryLog

INTERVAL = 1.0  # seconds between looks: a step is recorded within about this


async def record_steps(log: RecoveryLog, interval: float = INTERVAL) -> None:
    """Until cancelled: one `clock_step` record (its size in `step_s`) per step of the wall clock."""
    steps = clock.StepDetector()
    while True:
        await asyncio.sleep(interval)
        if (step := steps.check()) is not None:
            text = clock.describe_step(step)
            logger.warning("{}: recovery-log times before and after it differ by the step", text)
            log.append("watchdog", "clock_step", step_s=round(step, 3), message=text)
