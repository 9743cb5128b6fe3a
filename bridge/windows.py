"""Disconnect windows: every period without a live connection, and the backfill of each.

Why a heartbeat: a kill -9 leaves no trace of when the bridge died, so
without better knowledge the crash window starts at the last heartbeat (up to
a second before): the file `bridge.alive` in the session directory, rewritten
every second (bridge/alive.py; not a commit to messages.db, which would wake
every monitor every second). bridge_state keeps the `alive_at` / `alive_pid`
written at start and stop (and by the bridge's slow store probe); the later
of the two dates the window, so a missing file (an upgrade from a release
that heartbeat in the store) or an unreadable one (a power cut) only makes it
start earlier; so does a store put back from a backup (the file's beat is not
used for it).
Better knowledge is the moment the process was last known alive: the
exit time the watchdog saw on its pidfd (`watchdog.shared.exit_handoff`), or, for a
warm standby, the moment the kernel handed it the session lock (the owner's
death); either is used when it lies after the heartbeat. A disconnect window
starts when the transport last heard from the server (`ConnectionEvent.at`:
the last frame or keepalive answer), not when a timeout fired, and ends when
the connection was up again; messages delivered late into a window are
counted in its backfill line. A clean stop writes its own window ("bridge
stopped") and `clean_stop = 1`, which the next start closes on connect.
A window is backfilled after the offline queue was replayed: history for the
followed groups over the window (plus a margin) is requested and whatever the
store did not have yet is stored with source `history`.

A window's times are wall-clock times, matched against WhatsApp's own message
timestamps; its start is also kept on the boot's clock (bridge_state
`window_instant`, heartbeats likewise), so if the wall clock is stepped before
the window closes, the window is widened to cover both readings of its start
(`covering`): a step back is NTP correcting a clock that ran ahead (the start
moves back onto the corrected clock, so history is asked for the hour it
really was), a step forward is either a clock that ran behind or a VM that
was frozen (the start stays: more backfill, nothing missed).
"""
from __future__ import annotations

import asyncio
import os

from loguru import logger

from bridge.alive import AliveFile
from bridge.schema import BACKFILL_MARGIN, Window, format_epoch, now_ts, parse_ts, window_counts
from bridge.store import Store
from bridge.transport import HistoryUnsupported, NotConnected, Source, Transport
from watchdog.shared import clock
from watchdog.shared.clock import Instant
from watchdog.shared.human import counts_text, format_ms
from watchdog.shared.recovery_log import RecoveryLog

CRASH_REASON = "bridge crash"
STOPPED_REASON = "bridge stopped"


def covering(moment: Instant, end: bool = False) -> float:
    """The earlier (for an end: the later) of `moment`'s own wall time and its time on today's wall clock: the
    two readings of a step since (clock.on_this_clock), so that a window never leaves out the time it was."""
    return (max if end else min)(moment.wall, clock.on_this_clock(moment))


def _downtime_ms(window: Window) -> int:
    return int((parse_ts(window.ended_at or now_ts()) - parse_ts(window.started_at)).total_seconds() * 1000)


class Windows:
    def __init__(self, store: Store, alive: AliveFile, recovery_log: RecoveryLog, component: str,
                 transport: Transport, follow_groups: list[str]) -> None:
        self.store = store
        self.alive = alive
        self.log = recovery_log
        self.component = component
        self.transport = transport
        self.follow_groups = follow_groups
        self._told_unsupported = False
        self._backfilling = asyncio.Lock()  # a quick reconnect must not backfill a window twice at once

    def on_start(self, died: tuple[int, str] | None = None) -> None:
        """Open the crash window if the previous run died without a clean stop; mark this run unclean.

        `died`: (pid, time) a process was last known alive, better than its heartbeat; used only if that
        pid wrote the last heartbeat (a process that died before it ran says nothing about the outage).
        """
        last = self._last_alive()
        if last is not None and self.store.get_state("clean_stop") != "1" and self.store.open_window() is None:
            pid, started, moment = last  # else the outage it died in goes on
            if moment is not None:  # the wall clock may have been stepped since it beat
                started = format_epoch(covering(moment))
            if died is not None and died[0] == pid and started <= died[1] <= now_ts():
                started, moment = died[1], None
            window = self._open(started, moment, CRASH_REASON)
            logger.warning("previous run did not stop cleanly: disconnect window open since {} ({})",
                           window.started_at, window.reason)
            self.log.append(self.component, "disconnect", cause=window.reason,
                            message=f"window {window.span} ({window.reason}) opened")
        now = clock.instant()  # start_rowid: every row above it is this run's (monitors/lineage.py)
        self.store.set_state(clean_stop="0", alive_at=format_epoch(now.wall), alive_instant=str(now),
                             alive_pid=str(os.getpid()), start_rowid=str(self.store.message_count()))
        self.alive.beat(now, self.store.message_count())

    def _last_alive(self) -> tuple[int, str, Instant | None] | None:
        """(pid, time, instant) of the latest heartbeat: the file's, or bridge_state's if later, or if the file is
        missing or the store does not hold what the file's process had stored (a store put back from a backup).
        Later on the boot's clock where both say (a stepped wall clock can reverse their wall times)."""
        alive_at, alive_pid = self.store.get_state("alive_at"), self.store.get_state("alive_pid")
        stored_instant = Instant.parse(self.store.get_state("alive_instant"))
        if stored_instant is not None and alive_at != format_epoch(stored_instant.wall):
            stored_instant = None  # alive_at written by a release without instants, or by hand
        stored = (int(alive_pid or 0), alive_at, stored_instant) if alive_at is not None else None
        beat = self.alive.read()
        if beat is None or beat.messages > self.store.message_count():
            return stored
        if stored is not None and (clock.later(stored_instant, beat.instant) is stored_instant if stored_instant
                                   else stored[1] > beat.at):
            return stored
        return beat.pid, beat.at, beat.instant

    def heartbeat(self) -> None:
        """Every tick: the file only, so an idle bridge writes nothing in the store's directory."""
        self.alive.beat(clock.instant(), self.store.message_count())

    def record_alive(self) -> None:
        """The store's coarse `alive_at` (the bridge's slow write probe). Not fsynced: a power cut can only
        make the crash window start earlier (more backfill)."""
        now = clock.instant()
        self.store.set_state(durable=False, alive_at=format_epoch(now.wall), alive_instant=str(now))

    def on_stop(self, reason: str = STOPPED_REASON) -> None:
        now = clock.instant()
        window = self._open(format_epoch(now.wall), now, reason)
        self.store.set_state(clean_stop="1", alive_at=window.started_at,
                             alive_instant=str(now) if window.started_at == format_epoch(now.wall) else "")

    def on_disconnect(self, reason: str, last_good: str) -> None:
        """A window from `last_good` (the last frame or keepalive answer the transport received)."""
        if self.store.open_window() is not None:
            return  # still the same outage (e.g. a failed reconnect attempt)
        window = self._open(last_good, clock.instant(parse_ts(last_good).timestamp()), reason)
        logger.warning("disconnected: {} (window open since {})", reason, window.started_at)
        self.log.append(self.component, "disconnect", cause=reason, message=f"window {window.span} ({reason}) opened")

    def _open(self, started_at: str, moment: Instant | None, reason: str) -> Window:
        """Open a window (or find the open one) and keep its start on the boot's clock, if known."""
        window = self.store.start_window(started_at, reason)
        if window.started_at == started_at:
            self.store.set_state(window_instant=f"{window.id} {moment}" if moment else "")
        return window

    def _start_on_this_clock(self, window: Window) -> str | None:
        """The open window's start moved back onto today's wall clock, if it was stepped back since it opened."""
        window_id, _, moment = (self.store.get_state("window_instant") or "").partition(" ")
        start = Instant.parse(moment) if window_id == str(window.id) else None
        if start is None:
            return None
        rebased = covering(start)
        stepped = parse_ts(window.started_at).timestamp() - rebased > clock.STEP_THRESHOLD
        return format_epoch(rebased) if stepped else None  # (a crash window may be on this clock already)

    def on_caught_up(self, connected: Instant) -> None:
        """Close the open window, now that the offline queue is replayed: it ended when the connection was up.

        Both ends on today's wall clock: a step since the window opened (or since it connected) moves them."""
        current = self.store.open_window()
        if current is None:
            return
        started = self._start_on_this_clock(current)
        if started is not None:
            logger.warning("window {} opened at {} on a wall clock stepped since: it started at {}", current.id,
                           current.started_at, started)
        window = self.store.end_window(format_epoch(covering(connected, end=True)), started)
        if window is None:
            return
        downtime = _downtime_ms(window)
        logger.info("reconnected: window {} - {} ({}) closed after {}", window.started_at, window.ended_at,
                    window.reason, format_ms(downtime))  # a 0.35 s hang is "0.35 s", not "0.0 s"
        self.log.append(self.component, "reconnect", cause=window.reason, downtime_ms=downtime,
                        message=f"window {window.span} ({window.reason}) closed after {format_ms(downtime)}")

    async def backfill(self) -> list[Window]:
        """Backfill every closed window not yet backfilled; returns the windows it finished."""
        async with self._backfilling:
            return await self._backfill()

    async def _backfill(self) -> list[Window]:
        pending = self.store.windows_to_backfill()
        if not pending:
            return []
        if not self.transport.capabilities.history_request:
            return [self._finish(w, "unsupported", 0, self._unsupported_why()) for w in pending]
        finished = []
        for window in pending:
            since = parse_ts(window.started_at) - BACKFILL_MARGIN  # the margin is the counts' too (window_counts)
            until = parse_ts(window.ended_at or now_ts()) + BACKFILL_MARGIN
            recovered = 0
            try:
                for group in self.follow_groups:
                    recovered += self.store.add_messages(await self.transport.request_history(group, since, until),
                                                         Source.HISTORY)
            except NotConnected:
                logger.warning("backfill of window {} interrupted: not connected; retried on reconnect", window.id)
                return finished
            except HistoryUnsupported as exc:
                finished.append(self._finish(window, "unsupported", recovered, str(exc) or self._unsupported_why()))
                continue
            except Exception as exc:  # noqa: BLE001 - any transport failure: record it, keep the bridge running
                logger.exception("backfill of window {} failed", window.id)
                finished.append(self._finish(window, "failed", recovered, f"{type(exc).__name__}: {exc}"))
                continue
            finished.append(self._finish(window, "done", recovered, ""))
        return finished

    def _unsupported_why(self) -> str:
        why = self.transport.capabilities.history_limit or "this transport cannot request history"
        if not self._told_unsupported:
            logger.warning("disconnect windows cannot be backfilled: {}", why)
            self._told_unsupported = True
        return why

    def _finish(self, window: Window, status: str, recovered: int, problem: str) -> Window:
        """Mark the window backfilled and say what its messages did, counted as the monitors count their
        share (`window_counts`): one account of one window."""
        done = self.store.finish_backfill(window.id, status, recovered)
        counts = window_counts(self.store.conn, done)  # every group: each project's count is a share of it
        groups = ", ".join(self.follow_groups) or "no followed groups"
        text = (f"window {window.span} ({window.reason}): {status}, {counts_text(counts.recovered, counts.late)} "
                f"(history asked for {groups})" + (f"; {problem}" if problem else ""))
        logger.info("backfill {}", text)
        self.log.append(self.component, "backfill", cause=window.reason, message=text, recovered=counts.recovered,
                        late=counts.late, status=status, window_id=window.id)
        return done
