"""`wa-watchdog monitor --project NAME [--project NAME ...]`: a monitor process for one or more projects.

Each project is a `ProjectMonitor` (monitors/project.py); the process holds
what they share: one drops store connection, one inotify instance, the
receipt followers of the sending accounts it owns (monitors/receipts.py),
the lazily saved cursors, and one sd_notify heartbeat from its event loop.
Why several projects in one process (`[monitors] projects_per_process`): at
a hundred projects, a process each costs ~10 MB and a wake-up per process
for every commit to a shared messages.db; a process of twenty costs one.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import sqlite3
import time
from contextlib import suppress
from pathlib import Path

from loguru import logger

from bridge.integrity import CorruptStore, is_corrupt
from monitors.drops_store import StoreUnavailable, open_drops_store
from monitors.project import ProjectMonitor
from monitors.receipts import ReceiptFollower, receipt_accounts
from monitors.store_watch import StoreWakes
from watchdog import logs
from watchdog.config import Config, ProjectConfig, monitor_component
from watchdog.exitcodes import EXIT_CONFIG, EXIT_ERROR, EXIT_OK
from watchdog.migrations import SchemaTooNew
from watchdog.notify import Notifier, heartbeat_interval
from watchdog.recovery_log import RecoveryLog
from watchdog.waiting import wait_event

CURSOR_SAVE_INTERVAL = 5.0  # seconds between saves of cursors moved past messages without drops
STATUS_MIN_INTERVAL = 0.5  # STATUS= at most this often: a status line costs queries per project


class MonitorProcess:
    def __init__(self, config: Config, projects: list[ProjectConfig]) -> None:
        self.config = config
        self.projects = projects
        self.drops = open_drops_store(config)
        self.wakes = StoreWakes()
        self.notifier = Notifier()
        self.stopping = asyncio.Event()
        self._status_changed = asyncio.Event()
        log = RecoveryLog(config.watchdog.recovery_log, config.watchdog.recovery_log_max_bytes)
        self.monitors = [ProjectMonitor(config, project, self.drops, self.wakes, log, self.stopping,
                                        self._status_changed.set) for project in projects]
        self.receipts = [ReceiptFollower(self.drops, account, self.wakes)
                         for account in receipt_accounts(config, projects)]
        self.watchdog_sec = min(project.watchdog_sec for project in projects)

    @property
    def name(self) -> str:
        return ", ".join(project.name for project in self.projects)

    def status_line(self) -> str:
        return "; ".join(monitor.status_line() for monitor in self.monitors)

    def stop(self) -> None:
        self.stopping.set()
        for monitor in self.monitors:
            monitor.wake()

    async def _beat(self) -> None:
        """WATCHDOG=1 and STATUS= from the event loop: a process stuck in a query stops beating."""
        period = heartbeat_interval(self.watchdog_sec)
        while True:
            self.notifier.heartbeat()
            self.notifier.status(self.status_line())
            self._status_changed.clear()
            await asyncio.sleep(min(STATUS_MIN_INTERVAL, period))  # a change is published at once, but not more
            await wait_event(self._status_changed, max(0.0, period - STATUS_MIN_INTERVAL))  # often than this

    def save_cursors(self) -> None:
        """Write the cursors that moved past messages without drops, in one transaction (raises StoreUnavailable)."""
        moved = [(monitor, cursor) for monitor in self.monitors if (cursor := monitor.unsaved_cursor()) is not None]
        self.drops.save_cursors([cursor for _, cursor in moved])
        for monitor, (_, _, rowid) in moved:
            monitor.cursor_saved(rowid)

    async def _save_cursors(self) -> None:
        while not await wait_event(self.stopping, CURSOR_SAVE_INTERVAL):
            with suppress(StoreUnavailable):  # a monitor's own retry reports the outage; saved next time
                self.save_cursors()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        tasks = {asyncio.create_task(self._beat())}
        exit_code = EXIT_OK
        try:
            started = await asyncio.gather(*(monitor.start() for monitor in self.monitors))
            if all(started):
                self.notifier.ready(self.status_line())
                tasks |= {asyncio.create_task(work) for monitor in self.monitors for work in monitor.tasks()}
                tasks |= {asyncio.create_task(follower.run()) for follower in self.receipts}
                tasks.add(asyncio.create_task(self._save_cursors()))
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # following returns when stopped; anything else ending early is an error
        except sqlite3.Error as exc:
            if is_corrupt(exc):  # never keep serving on a damaged file: exit 2, restore it (docs/OPERATIONS.md)
                logger.error("monitor {}: {}", self.name, CorruptStore(Path(str(self.drops.description)), str(exc)))
                exit_code = EXIT_CONFIG
            else:
                logger.error("monitor {} stopped on a database error: {}", self.name, exc)
                exit_code = EXIT_ERROR
        except SchemaTooNew as exc:
            logger.error("monitor {}: {}", self.name, exc)
            exit_code = EXIT_CONFIG
        except StoreUnavailable:
            pass  # stopped while the drops store was down: nothing to finish
        begun = time.monotonic()
        self.notifier.stopping()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with suppress(StoreUnavailable, sqlite3.Error):  # else read again after the restart: nothing lost
            self.save_cursors()
        for monitor in self.monitors:
            monitor.close()
        self.drops.close()
        logger.info("monitor {} stopped in {:.0f} ms", self.name, (time.monotonic() - begun) * 1000)
        return exit_code


def cmd_monitor(config: Config, args: argparse.Namespace) -> int:
    projects = [config.project(name) for name in dict.fromkeys(args.project)]
    logs.setup(monitor_component(projects))
    disabled = [project.name for project in projects if not project.enabled]
    if disabled:
        logger.error("project {} is disabled in {} (enabled = false)", ", ".join(disabled), config.path)
        return EXIT_CONFIG
    try:
        process = MonitorProcess(config, projects)
    except (SchemaTooNew, CorruptStore) as exc:
        logger.error("monitor {}: {}", ", ".join(p.name for p in projects), exc)
        Notifier().status(f"{projects[0].name}: {exc}")  # the watchdog's `failed` alert names it
        return EXIT_CONFIG
    except sqlite3.Error as exc:
        logger.error("monitor {}: cannot open the drops store: {}", ", ".join(p.name for p in projects), exc)
        return EXIT_CONFIG if is_corrupt(exc) else EXIT_ERROR
    return asyncio.run(process.run())
