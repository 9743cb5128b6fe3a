"""One watchdog per data directory: `run/watchdog.lock`, taken at start and held for the process's life."""
from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from loguru import logger

from watchdog.shared import endpoints, locks
from watchdog.shared.config import WatchdogConfig

WATCHDOG_LOCK = "watchdog.lock"  # in the run directory; holds the supervising watchdog's pid


async def take_watchdog_lock(data_dir: Path, settings: WatchdogConfig,
                             stop_requested: asyncio.Event | None) -> int | None:
    """Two watchdogs on one data directory would each stop the other's bridge, forever.

    Waits a while for the lock, because a watchdog replaced by systemd may still be on its way out.
    Returns the lock's fd (held until this process exits), or None if another watchdog keeps it
    (or a stop was requested meanwhile).
    """
    path = endpoints.run_dir(data_dir) / WATCHDOG_LOCK
    fd = locks.open_lock(path)
    wait = settings.stop_timeout + settings.term_grace
    deadline = time.monotonic() + wait
    stranger_since: float | None = None
    said = False
    while not locks.try_lock(fd):
        if stop_requested is not None and stop_requested.is_set():
            os.close(fd)
            return None
        if locks.held_by_stranger(fd):  # not a watchdog: do not wait on it
            stranger_since = stranger_since or time.monotonic()
            if time.monotonic() - stranger_since >= locks.STRANGER_GRACE:
                fd = locks.replace(path, fd)
                continue
        elif time.monotonic() > deadline:
            logger.error("wa-watchdog run: another wa-watchdog (pid {}) already supervises {} ({})",
                         locks.recorded_pid(fd) or "unknown", data_dir, path)
            os.close(fd)
            return None
        elif not said:  # at once: a second demo must not sit silent for the whole wait
            said = True
            logger.warning("another wa-watchdog (pid {}) holds {}: waiting up to {:g} s for it to exit",
                           locks.recorded_pid(fd) or "unknown", path, wait)
        await asyncio.sleep(0.05)
    locks.write_owner(fd)
    return fd
