"""Disconnect windows claimed for their report, and the drops posted in them marked backfilled. A part of DropsDB
(monitors/drops_store.py)."""
from __future__ import annotations

from bridge.schema import now_ts
from monitors.store.sql import Backend


class ReportedWindows:
    db: Backend

    def reported_windows(self, project: str, account: str) -> dict[int, str | None]:
        """Windows already claimed for a report (written or being written): id -> the window's start (None when
        claimed before starts were kept)."""
        rows = self.db.rows("SELECT window_id, window_started_at FROM reported_windows WHERE project = ? "
                            "AND account = ?", (project, account))
        return dict(rows)

    def unfinished_reports(self, project: str, account: str) -> dict[int, str | None]:
        """Windows claimed whose log line may not have been written (the monitor died in between)."""
        rows = self.db.rows("SELECT window_id, window_started_at FROM reported_windows WHERE project = ? "
                            "AND account = ? AND reported_at IS NULL ORDER BY window_id", (project, account))
        return dict(rows)

    def claim_window(self, project: str, account: str, window_id: int, started_at: str,
                     ended_at: str) -> list[str]:
        """Claim a window for its report and mark the project's drops posted in it backfilled.

        Returns those drop numbers (also the ones recorded live just before a crash, whose
        window was only known after the bridge restarted). A claim of the same id with another start was a
        window of a file since replaced (a restored backup numbers its windows again): this one takes its place.
        """
        key = (project, account, window_id)
        with self.db.transaction() as tx:
            claimed = tx.rows("SELECT window_started_at FROM reported_windows WHERE project = ? AND account = ? "
                              "AND window_id = ?", key)
            if claimed and claimed[0][0] not in (None, started_at):
                tx.run("UPDATE reported_windows SET window_started_at = ?, claimed_at = ?, reported_at = NULL "
                       "WHERE project = ? AND account = ? AND window_id = ?", (started_at, now_ts(), *key))
            else:
                tx.run("INSERT INTO reported_windows (project, account, window_id, claimed_at, window_started_at) "
                       "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", (*key, now_ts(), started_at))
            tx.run("UPDATE drops SET backfilled = ? WHERE project = ? AND message_time BETWEEN ? AND ?",
                   (True, project, started_at, ended_at))
            rows = tx.rows("SELECT drop_number FROM drops WHERE project = ? AND message_time BETWEEN ? AND ? "
                           "ORDER BY message_time, id", (project, started_at, ended_at))
            return [row[0] for row in rows]

    def window_reported(self, project: str, account: str, window_id: int) -> None:
        with self.db.transaction() as tx:
            tx.run("UPDATE reported_windows SET reported_at = ? WHERE project = ? AND account = ? "
                   "AND window_id = ?", (now_ts(), project, account, window_id))
