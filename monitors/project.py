"""One project's drop monitor inside a monitor process (monitors/main.py).

Follows the listening account's messages.db from the project's cursor in the
drops store, records each drop once (drops and cursor in one transaction),
hands new drops' acknowledgements to its feedback sender, and reports each
backfilled disconnect window once. The process it runs in holds the drops
store connection, the store's follower and its wake-ups, and the heartbeat
for all its projects, and calls `catch_up` when the store has new rows.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
from datetime import timedelta

from loguru import logger
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from bridge.schema import StoredMessage, Window, WindowCounts, bare_user, format_ts, parse_ts
from monitors.cluster_config import reader_key
from monitors.detect import DropPattern, submissions
from monitors.drops_store import Drop, DropsDB, NewFeedback, Position, StoreUnavailable, Submission
from monitors.feedback import FeedbackSender, ack_for
from monitors.follow import StoreFollower
from monitors.lineage import recheck
from monitors.store import copies as copies_store
from monitors.store_thread import StoreThread
from monitors.config import ProjectConfig
from watchdog.components import Config
from watchdog.shared.human import counts_text
from watchdog.shared.recovery_log import RecoveryLog
from watchdog.shared.waiting import wait_event
from watchdog.shared import clock

BATCH = 1000  # messages per transaction when catching up
REPORTED_STATUSES = ("done", "unsupported", "failed")  # a window's backfill is over: report it
STORE_RETRY_MAX = 5.0  # seconds between attempts to reach a drops store that is down (PostgreSQL)


def window_text(window: Window, counts: WindowCounts, drops: list[str]) -> str:
    """`window 08:03:10-08:06:40 (bridge crash): in its groups 1 recovered from history, 2 delivered late;
    DR9996543 backfilled`: the project's share of the bridge's line about the window, in the same words."""
    outcome = {"done": "", "unsupported": " backfill unsupported;", "failed": " backfill failed;"}[window.backfill_status]
    found = f"{', '.join(drops)} backfilled" if drops else "no drops"
    return (f"window {window.span} ({window.reason}):{outcome} in its groups "
            f"{counts_text(counts.recovered, counts.late)}; {found}")


class ProjectMonitor:
    """One project in a monitor process: its cursor, its windows, its feedback; the process owns the rest."""

    def __init__(self, config: Config, project: ProjectConfig, drops: DropsDB, recovery_log: RecoveryLog,
                 stopping: asyncio.Event, changed: Callable[[], None] = lambda: None,
                 writes: StoreThread | None = None) -> None:
        self.config = config
        self.project = project
        self.component = project.component
        self.account = config.account(project.listen_account)
        self.reader = reader_key(self.account.name, config.cluster)  # its cursor and windows in the drops store
        self.groups = frozenset(project.groups)
        self.own_numbers = frozenset(bare_user(jid) for jid in config.own_jids)
        self.pattern = DropPattern(project.pattern)
        self.drops = drops  # the process's connection: its calls are synchronous, on its event loop
        self.writes = writes or StoreThread(drops)  # recording, which can wait on another host's locks
        self._recording = False  # a recording is under way (off the loop): its cursor is not saved lazily meanwhile
        self.recovery_log = recovery_log
        self.sender = FeedbackSender(config, project, drops)
        self.sender.log = recovery_log
        self.sender.changed = changed  # a failover shows in the status line
        self.position = Position(0)  # the cursor, with the marks that tell its file (monitors/lineage.py)
        self.saved_position = Position(0)  # as the drops store has it (moved lazily past messages without drops)
        self.drop_count = 0
        self.reported: dict[int, str | None] = {}  # window id -> its start (None: claimed before starts were kept)
        self.positioned = False  # cursor and reported windows read from the drops store
        self.store_error = ""  # why the drops store cannot be reached right now ("" = it can)
        self.windows_after = 0  # windows up to this id are reported
        self.lag = 0.0
        self.following = False
        self._changed = changed  # tells the process its status line changed
        self._stop = stopping
        with suppress(StoreUnavailable):  # PostgreSQL down: start() waits for it
            self._position()

    def _position(self) -> None:
        """Where this project stands: its cursor and the windows reported before (claimed and logged),
        which are never read again."""
        name, account = self.project.name, self.reader
        self.position = self.saved_position = self.drops.position(name, account)
        self.drop_count = self.drops.drop_count(name)  # then counted here: a status line costs no query
        unfinished = self.drops.unfinished_reports(name, account)
        self.reported = {i: start for i, start in self.drops.reported_windows(name, account).items()
                         if i not in unfinished}
        self.positioned = True

    @property
    def cursor(self) -> int:
        return self.position.rowid

    # -- status and heartbeat --------------------------------------------------------------------

    def status_line(self) -> str:
        if self.store_error:
            return (f"{self.project.name}: unhealthy: drops store unavailable, retrying (cursor {self.cursor}): "
                    f"{self.store_error}")
        if not self.following:
            return f"{self.project.name}: waiting for {self.account.store}"
        pending = self.sender.waiting
        senders = self.sender.senders
        through = f", feedback through {senders.account} ({senders.cause})" if senders and senders.active else ""
        return (f"{self.project.name}: {self.drop_count} drops, cursor {self.cursor}, "
                f"lag {self.lag:.2f} s" + (f", {pending} feedback pending" if pending else "") + through)

    # -- following -------------------------------------------------------------------------------

    async def catch_up(self, store: StoreFollower) -> None:
        """Record everything after the cursor, then report windows whose backfill finished.

        Windows are read before the messages: a window marked done was backfilled into the
        store before that, so its messages are recorded by the time it is reported.
        """
        windows = [w for w in store.windows(self.windows_after) if not self._was_reported(w)]
        while True:
            messages = store.messages_after(self.cursor, BATCH)
            if not messages:
                break
            found = submissions(messages, self.pattern, self.groups, self.own_numbers, windows)
            await self._publish_copies(messages)
            ack = (lambda sub: ack_for(self.project, sub)) if self.project.feedback.auto_ack else None
            new = []
            last = messages[-1]
            position = Position(last.rowid, last.id, last.stored_at, store.store_id())
            if found:  # drops and the cursor in one transaction; past messages without drops it moves lazily
                new = await self._record(position, found, ack)
                self.saved_position = position
                self.drop_count += len(new)
            self.position = position
            self.lag = max(0.0, (clock.now() - parse_ts(messages[-1].timestamp)).total_seconds())
            for drop in new:
                logger.info("drop {} in {} from {}{}", drop.drop_number, drop.group_name or drop.group_jid,
                            drop.submitted_by, " (backfilled)" if drop.backfilled else "")
            if new and ack is not None:
                self.sender.wake()
            self._changed()
            if len(messages) < BATCH:
                break
            await asyncio.sleep(0)  # a long catch-up still lets heartbeats and feedback run
        self.report_windows(store, windows)

    async def _publish_copies(self, messages: list[StoredMessage]) -> None:
        """In a cluster: the from-me messages of the project's groups this host's device received from a sibling
        device, published for the host whose own bridge lost a send's answer (monitors/store/copies.py). Again
        after a restart (from the saved cursor): publishing is idempotent."""
        cluster = self.config.cluster
        if cluster is None:
            return
        copies = [m for m in copies_store.sibling_copies(messages) if m.chat_jid in self.groups]
        if not copies:
            return
        older = format_ts(clock.now() - timedelta(seconds=copies_store.KEEP_S))
        await self.writes.call(lambda drops: copies_store.publish(drops.db, self.account.jid, cluster.node, copies,
                                                                  older))

    async def _record(self, position: Position, found: list[Submission],
                      ack: Callable[[Submission], NewFeedback] | None) -> list[Drop]:
        """Record through `writes`. Meanwhile the process's lazy cursor save must not write this project's older
        position after the recording committed its newer one (a cancelled recording may still commit: the flag
        stays, and the position is read from the drops store at the next start)."""
        self._recording = True
        try:
            new = await self.writes.call(lambda drops: drops.record(self.project.name, self.reader, position, found,
                                                                    ack))
        except Exception:
            self._recording = False
            raise
        self._recording = False
        return new

    def report_windows(self, store: StoreFollower, windows: list[Window]) -> None:
        """One recovery-log line per finished window; claimed in drops.db first so it is written once.

        Reported windows are left out of later reads (`windows_after`, by id: a window's start time goes back
        with a stepped wall clock, its id never does): their drops are marked already, and anything from their
        time that reaches the store later is offline or history. A months-long run thus reads a handful of
        windows per change, not all of them.
        """
        finished = [w for w in windows if w.ended_at is not None and w.backfill_status in REPORTED_STATUSES]
        # read only when there is something to report: this runs on every catch-up of every project
        unfinished = self.drops.unfinished_reports(self.project.name, self.reader) if finished else {}
        for window in finished:
            if window.id in unfinished and unfinished[window.id] in (None, window.started_at) \
                    and self._already_logged(window.id):
                self.drops.window_reported(self.project.name, self.reader, window.id)
            else:
                self._report(store, window)
            self.reported[window.id] = window.started_at
        unsettled = [w.id for w in windows if not self._was_reported(w)]
        if unsettled or windows:
            self.windows_after = min(unsettled) - 1 if unsettled else windows[-1].id

    def _was_reported(self, window: Window) -> bool:
        """A window is its id and its start: a restored messages.db numbers its windows again."""
        return window.id in self.reported and self.reported[window.id] in (None, window.started_at)

    def _report(self, store: StoreFollower, window: Window) -> None:
        assert window.ended_at is not None
        drops = self.drops.claim_window(self.project.name, self.reader, window.id, window.started_at,
                                        window.ended_at)
        counts = store.window_counts(window, self.groups)
        text = window_text(window, counts, drops)
        logger.info("backfill {}", text)
        self.recovery_log.append(self.component, "backfill", cause=window.reason, message=text,
                                 window_id=window.id, account=self.account.name, recovered=counts.recovered,
                                 late=counts.late, drops=drops)
        self.drops.window_reported(self.project.name, self.reader, window.id)

    def _already_logged(self, window_id: int) -> bool:
        """After a crash between claiming and reporting: did the line make it into the log?"""
        return any(r.get("component") == self.component and r.get("event") == "backfill"
                   and r.get("window_id") == window_id and r.get("account") == self.account.name
                   for r in self.recovery_log.read())

    async def _sleep(self, seconds: float) -> None:
        await wait_event(self._stop, seconds)

    def _store_down(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if not self.store_error:
            logger.error("monitor {}: drops store unavailable, nothing acknowledged past rowid {}; retrying: {}",
                         self.project.name, self.cursor, exc)
        self.store_error = str(exc)
        self._changed()

    async def with_store(self, action: Callable[[], Awaitable[None]]) -> None:
        """Run `action` until the drops store lets it finish: backoff with jitter while it is down.

        Nothing moved past the cursor in a failed attempt (its transaction did not commit, or the
        commit's answer was lost and the retry finds every row already there). Gives up only on stop.
        The first attempt is a plain call: this runs for every project on every look, and tenacity's
        machinery costs more than a look; it is built only once the store has failed.
        """
        if not self.store_error:
            try:
                return await action()
            except StoreUnavailable:
                pass  # retried below, with the outage reported
        retrying = AsyncRetrying(retry=retry_if_exception_type(StoreUnavailable), reraise=True,
                                 wait=wait_exponential_jitter(multiplier=0.1, max=STORE_RETRY_MAX, jitter=0.1),
                                 stop=lambda _: self._stop.is_set(), before_sleep=self._store_down, sleep=self._sleep)
        async for attempt in retrying:
            with attempt:
                await action()
        if self.store_error:
            logger.info("monitor {}: drops store reachable again ({}), cursor {}", self.project.name,
                        self.drops.description, self.cursor)
            self.store_error = ""
            self._changed()

    async def _reposition(self) -> None:
        self._position()

    def unsaved_cursor(self) -> tuple[str, str, Position] | None:
        """(project, account, position) when the cursor moved since it was saved (past messages without drops,
        or back by a recheck)."""
        if self.position == self.saved_position or self._recording:
            return None
        return self.project.name, self.reader, self.position

    def cursor_saved(self, position: Position) -> None:
        self.saved_position = position

    def _recheck(self, store: StoreFollower) -> None:
        """Make sure the cursor belongs to this file before reading on from it (monitors/lineage.py)."""
        cursor = self.position
        position, reread, why = recheck(store, cursor)
        if not why:
            return
        text = f"{self.account.store}: {why} (drops already recorded are not recorded again)"
        logger.warning("monitor {}: {}", self.project.name, text)
        self.recovery_log.append(self.component, "reread", cause="store changed under the cursor", message=text,
                                 account=self.account.name, cursor=cursor.rowid, rowid=position.rowid,
                                 reread=reread if reread >= 0 else None)
        self.position = position

    async def start(self, store: StoreFollower) -> None:
        """Position (waiting for the drops store) and catch up once on the process's follower of the store."""
        if not self.positioned:
            await self.with_store(self._reposition)
        self._recheck(store)
        self.following = True
        logger.info("monitor {} following {} from rowid {} (groups {})", self.project.name,
                    self.account.store, self.cursor, ", ".join(sorted(self.groups)))
        await self.with_store(lambda: self.catch_up(store))
