"""`wa-watchdog monitor --project NAME [--project NAME ...]`: a monitor process for one or more projects.

Each project is a `ProjectMonitor` (monitors/project.py); the process holds
what they share: one drops store connection, one inotify instance, one
follower and wake-up schedule per bridge store they listen to, the
receipt followers of the sending accounts it owns (monitors/receipts.py),
the lazily saved cursors, and one sd_notify heartbeat from its event loop.
Why several projects in one process (`[monitors] projects_per_process`): at
a hundred projects, a process each costs ~10 MB and a wake-up per process
for every commit to a shared messages.db; a process of twenty costs one.
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import sqlite3
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING

from loguru import logger

from bridge.integrity import CorruptStore, is_corrupt
from monitors.drops_store import StoreUnavailable, open_drops_store
from monitors.feedback import FeedbackSender
from monitors.fate import Fates
from monitors.follow import StoreFollower, StoreNotReady
from monitors.group_watch import GroupWatch
from monitors.project import ProjectMonitor
from monitors.cluster_config import reader_key
from monitors.receipts import ReceiptFollower, receipt_accounts
from monitors.store_thread import StoreThread
from monitors.store_watch import StoreWakes
from watchdog.shared.alerts import AlertManager
from watchdog.shared import logs
from watchdog.shared.child_entry import ChildEntry
from monitors.config import ProjectConfig, monitor_component
from watchdog.components import Config
from watchdog.shared.exitcodes import EXIT_CONFIG, EXIT_ERROR, EXIT_OK
from watchdog.shared.migrations import SchemaTooNew
from watchdog.shared.notify import Notifier
from watchdog.shared.recovery_log import RecoveryLog
from watchdog.shared.waiting import wait_event

if TYPE_CHECKING:
    from monitors.lease_keeper import LeaseKeeper

STORE_WAIT_INTERVAL = 0.1  # how often to look for a messages.db that does not exist yet
CURSOR_SAVE_INTERVAL = 5.0  # seconds between saves of cursors moved past messages without drops
STATUS_MIN_INTERVAL = 0.5  # STATUS= at most this often: a change goes out at once, a burst of looks as one line


class MonitorProcess:
    def __init__(self, config: Config, projects: list[ProjectConfig]) -> None:
        self.config = config
        self.projects = projects
        self.drops = open_drops_store(config)
        self.writes = StoreThread.for_config(config, self.drops)  # a cluster: what can wait on another host, off the loop
        self.wakes = StoreWakes()
        self._status_changed = asyncio.Event()
        self._looks: list[asyncio.Event] = []  # one per followed store: set by inotify, or to stop
        # WATCHDOG=1 and STATUS= from the event loop: a process stuck in a query stops beating.
        self.entry = ChildEntry(min(project.watchdog_sec for project in projects), self.status_line,
                                status_changed=self._status_changed, status_gap=STATUS_MIN_INTERVAL,
                                on_stop=self._wake_looks)
        self.stopping = self.entry.stop
        log = RecoveryLog(config.watchdog.recovery_log, config.watchdog.recovery_log_max_bytes)
        self.monitors = [ProjectMonitor(config, project, self.drops, log, self.stopping, self._status_changed.set,
                                        self.writes) for project in projects]
        self.receipts = [ReceiptFollower(self.drops, account, self.wakes, self.writes,
                                         reader_key(account.name, config.cluster))
                         for account in receipt_accounts(config, projects)]
        self.alerts = AlertManager(config.alerts, log)
        for monitor in self.monitors:
            monitor.sender.alerts = self.alerts  # feedback_failover
        self.keepers = self._lease_keepers(log)
        self.group_watch = GroupWatch(config, self.monitors, self.alerts, self._status_changed)

    def _lease_keepers(self, log: RecoveryLog) -> list[LeaseKeeper]:
        """A cluster (`[cluster]`): one sender lease keeper per lease of these projects (one for all the numbers
        their `send_accounts` link: Config.sending_groups), each fencing its projects' feedback. One host: none,
        and feedback is sent as it always was."""
        if self.config.cluster is None:
            return []
        from monitors.lease_keeper import LeaseKeeper  # psycopg: a cluster always has PostgreSQL
        keepers = []
        lease_of = {monitor.project.name: self.config.lease_account(monitor.project) for monitor in self.monitors}
        for account in dict.fromkeys(lease_of.values()):
            mine = [monitor for monitor in self.monitors if lease_of[monitor.project.name] == account]
            senders = [monitor.sender for monitor in mine]
            bridges = dict.fromkeys(name for monitor in mine for name in monitor.project.send_accounts or [account])
            keeper = LeaseKeeper(self.config.database, self.config.cluster, account, monitor_component(self.projects),
                                 log, self.alerts, _waker(senders), self.config, list(bridges),
                                 functools.partial(self._give_back, _waker(senders)),
                                 functools.partial(self._in_doubt, _waker(senders)))
            for sender in senders:
                sender.held = keeper.fence
                sender.fates = Fates(self.config, sender.project, self.config.cluster, self.drops, log, self.alerts)
            keepers.append(keeper)
        return keepers

    def _give_back(self, wake: Callable[[], None], message_ids: list[str], up_to_token: int) -> bool:
        """Feedback a bridge withdrew under a superseded token: pending again, for the holder (maybe this host).
        False when the drops store did not take it (the keeper tries again after its next look)."""
        try:
            given = self.drops.give_back(message_ids, up_to_token)
        except StoreUnavailable as exc:
            logger.warning("cannot give back {} withdrawn feedback yet: {}", len(message_ids), exc)
            return False
        if given:
            logger.info("gave back {} withdrawn feedback to the sender lease's holder", len(given))
            wake()
        return True

    def _in_doubt(self, wake: Callable[[], None], message_ids: list[str]) -> None:
        """Feedback this node's bridge accepted (queued) and then lost the answer of (bridge/outbox.py): pending
        again, still handed by this node, for the holder to find out whether it went (monitors/fate.py)."""
        assert self.config.cluster is not None
        try:
            found = self.drops.requeue_in_doubt(message_ids, self.config.cluster.node)
        except StoreUnavailable as exc:  # the bridge says it again at the next word
            logger.warning("cannot take back {} feedback in doubt yet: {}", len(message_ids), exc)
            return
        if found:
            logger.warning("{} feedback queued in this host's bridge lost its answer: to be found out", len(found))
            wake()

    @property
    def name(self) -> str:
        return ", ".join(project.name for project in self.projects)

    def status_line(self) -> str:
        return "; ".join(self.group_watch.status_line(monitor) for monitor in self.monitors)

    def _wake_looks(self) -> None:
        for look in self._looks:
            look.set()

    async def _open_store(self, path: Path) -> StoreFollower | None:
        """Wait for a bridge's store to exist (the bridge may start after us); None if stopped first."""
        told = False
        while not self.stopping.is_set():
            try:
                return StoreFollower(path)
            except StoreNotReady as exc:
                if not told:
                    logger.info("waiting for the store: {}", exc)
                    told = True
            await wait_event(self.stopping, STORE_WAIT_INTERVAL)
        return None

    async def _follow(self, store: StoreFollower, monitors: list[ProjectMonitor]) -> None:
        """Catch the projects of one store up whenever it changes: woken by inotify, and a full look every
        SAFETY_INTERVAL. One follower and one schedule for all of them: a commit costs the process one
        data_version read, and each project a read only when there are rows past its cursor.

        inotify reports the WAL write, and SQLite publishes the commit in the -shm index just after it:
        a wake that finds data_version unchanged looks again SETTLE_DELAYS later. A commit without new
        messages (a window's update) costs one MAX(rowid); windows are read with the next messages or at
        the next full look.
        """
        look = asyncio.Event()
        self._looks.append(look)
        schedule = self.wakes.subscribe(store.path, look)
        unread = False  # commits not read in full yet (a window's update, a receipt)
        full = True
        try:
            while not self.stopping.is_set():
                if store.changed():
                    unread = True
                if unread:
                    newest = store.newest_rowid()
                    due = [monitor for monitor in monitors if full or newest > monitor.cursor]
                    for monitor in due:
                        await monitor.with_store(functools.partial(monitor.catch_up, store))
                    if due:
                        unread = False
                        # Only new messages end the settle looks: a visible commit can be an earlier one (a
                        # receipt) while the message that woke us is still being fsynced.
                        schedule.committed()
                full = await schedule.next_look()
        finally:
            schedule.close()

    def save_cursors(self) -> None:
        """Write the cursors that moved past messages without drops, in one transaction (raises StoreUnavailable)."""
        moved = [(monitor, cursor) for monitor in self.monitors if (cursor := monitor.unsaved_cursor()) is not None]
        self.drops.save_cursors([cursor for _, cursor in moved])
        for monitor, (_, _, position) in moved:
            monitor.cursor_saved(position)

    async def _save_cursors(self) -> None:
        while not await wait_event(self.stopping, CURSOR_SAVE_INTERVAL):
            with suppress(StoreUnavailable):  # a monitor's own retry reports the outage; saved next time
                self.save_cursors()

    async def run(self) -> int:
        async with self.entry:  # SIGTERM/SIGINT stop it from here on
            self.entry.start_heartbeat()
            tasks: set[asyncio.Task] = set()
            stores: dict[Path, StoreFollower] = {}
            exit_code = await self._serve(tasks, stores)
            begun = time.monotonic()
            self.entry.stopping()
            await self.entry.stop_heartbeat()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with suppress(StoreUnavailable, sqlite3.Error):  # else read again after the restart: nothing lost
                self.save_cursors()
            await self.alerts.close(timeout=1.0)
            for store in stores.values():
                store.close()
            self.drops.close()
            self.writes.close()
            logger.info("monitor {} stopped in {:.0f} ms", self.name, (time.monotonic() - begun) * 1000)
            return exit_code

    async def _serve(self, tasks: set[asyncio.Task], stores: dict[Path, StoreFollower]) -> int:
        """Open the stores, READY=1, then follow until stopped; the exit code. Fills `tasks` and `stores` for the
        clean-up in `run`."""
        try:
            for path in dict.fromkeys(monitor.account.store for monitor in self.monitors):
                if (store := await self._open_store(path)) is not None:
                    stores[path] = store
            if not self.stopping.is_set():
                # The lease keepers first, on threads of their own: a catch-up may wait on a silent holder's locks,
                # and only their takeover ends its sessions.
                tasks |= {asyncio.create_task(keeper.run(self.stopping)) for keeper in self.keepers}
                await asyncio.gather(*(monitor.start(stores[monitor.account.store]) for monitor in self.monitors))
                self.entry.ready()
                tasks |= {asyncio.create_task(self._follow(store, [m for m in self.monitors if m.account.store == path]))
                          for path, store in stores.items()}
                tasks |= {asyncio.create_task(monitor.sender.run()) for monitor in self.monitors}
                tasks |= {asyncio.create_task(follower.run()) for follower in self.receipts}
                tasks.add(asyncio.create_task(self._save_cursors()))
                tasks.add(asyncio.create_task(self.group_watch.run(self.stopping)))
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # following returns when stopped; anything else ending early is an error
        except sqlite3.Error as exc:
            if is_corrupt(exc):  # never keep serving on a damaged file: exit 2, restore it (docs/OPERATIONS.md)
                logger.error("monitor {}: {}", self.name, CorruptStore(Path(str(self.drops.description)), str(exc)))
                return EXIT_CONFIG
            logger.error("monitor {} stopped on a database error: {}", self.name, exc)
            return EXIT_ERROR
        except SchemaTooNew as exc:
            logger.error("monitor {}: {}", self.name, exc)
            return EXIT_CONFIG
        except StoreUnavailable:
            pass  # stopped while the drops store was down: nothing to finish
        return EXIT_OK

def _waker(senders: list[FeedbackSender]) -> Callable[[], None]:
    def wake() -> None:
        for sender in senders:
            sender.wake()
    return wake


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
