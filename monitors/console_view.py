"""The console's Drops panel, from the drops side: today's drops per project, read-only from drops.db.

Named in the monitors' slice (`console_views` in monitors/component.py;
`watchdog/control/console/extensions.py` describes the interface), so the watchdog
core composes it without knowing what a drop is. Besides the panel it puts
every backfilled drop on its project's timeline row, sums up the backfill
reports on a disconnect window in its incident (the bridge's and every
monitor's), gives the console the group names for JIDs, and serves a drop's
page with the messages it came in.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime, timezone
from html import escape
from typing import TypeVar
from urllib.parse import quote

from bridge.config import account_component
from bridge.schema import bare_user, format_ts, open_readonly, parse_ts
from monitors import cluster_status
from monitors.drops_store import Drop, DropsDB, drops_db_path, open_drops_store
from watchdog.components import Config
from watchdog.control.console.events import Events, FollowUp
from watchdog.control.console.extensions import Extension
from watchdog.control.console.timeline import Mark
from watchdog.shared import clock
from watchdog.shared.human import counts_text

T = TypeVar("T")
PANEL_ROWS = 10  # per project on the console page; the rest are one click away
MESSAGE_SQL = "SELECT timestamp, sender, content FROM messages WHERE id = ? AND chat_jid = ?"


def _window_account(record: dict) -> str:
    """The account whose disconnect window a backfill record reports on (the bridge's names it by its row)."""
    return str(record.get("account") or record.get("component", "").removeprefix(account_component("")))


def backfill_summary(backfills: list[dict]) -> str:
    """The bridge's recovered messages and every project's drops, zero results folded into a count."""
    bridge = account_component("")
    parts = []
    for record in backfills:
        if record.get("component", "").startswith(bridge):
            parts.append(f"backfill {record.get('status', 'done')}: "
                         f"{counts_text(int(record.get('recovered') or 0), int(record.get('late') or 0))}")
    reports = [r for r in backfills if not r.get("component", "").startswith(bridge)]
    found = [r for r in reports if r.get("drops")]
    for record in found:
        drops = record["drops"]
        parts.append(f"{record['component'].removeprefix('monitor:')}: {len(drops)} drop"
                     f"{'' if len(drops) == 1 else 's'} backfilled ({', '.join(drops)})")
    empty = len(reports) - len(found)
    if empty:
        parts.append(f"{empty} project{'' if empty == 1 else 's'} missed nothing" if found or parts
                     else f"nothing missed ({empty} project{'' if empty == 1 else 's'} checked)")
    return "; ".join(parts) or "backfill"


# A `backfill` record (the bridge's, and each monitor's report, naming the window by `account` and
# `window_id`) joins the incident of that account's disconnect window; a backfilled drop is a mark.
EVENTS = Events(kinds={"backfilled": ("#1a9641", "backfilled drop")},
                follow_ups=(FollowUp("backfill", lambda r: account_component(_window_account(r)),
                                     lambda r: (_window_account(r), r.get("window_id")), backfill_summary),))


def _clock(text: str | None) -> str:
    return f"{parse_ts(text).astimezone():%H:%M:%S}" if text else "-"


def _today_start() -> str:
    local_midnight = clock.local_now().astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
    return format_ts(local_midnight.astimezone(timezone.utc))


class DropsView(Extension):
    name = "drops"
    title = "Drops today"
    events = EVENTS

    def __init__(self, config: Config) -> None:
        self.config = config
        self.path = drops_db_path(config.data_dir)

    def _read(self, read: Callable[[DropsDB], T]) -> T | None:
        """Run `read` on the configured store opened read-only; None while an SQLite store does not exist yet."""
        if not self.config.database.url and not self.path.exists():
            return None
        db = open_drops_store(self.config, readonly=True)
        try:
            return read(db)
        finally:
            db.close()

    def panel(self, status: list[dict]) -> str:
        """A cluster's nodes and sender leases (monitors/cluster_status.py), then each project's drops today."""
        cluster = cluster_status.read(self.config)
        drops: list[Drop] = self._read(lambda db: db.drops(since=_today_start())) or []
        by_project: dict[str, list[Drop]] = {p.name: [] for p in self.config.projects}
        for drop in drops:
            by_project.setdefault(drop.project, []).append(drop)
        return ((cluster_status.panel(cluster) if cluster is not None else "")
                + "".join(self._project(project, rows, PANEL_ROWS) for project, rows in by_project.items()))

    def _project(self, project: str, rows: list[Drop], limit: int | None) -> str:
        """One project's drops today, newest first: the first `limit` (None: all) and a link to the rest."""
        backfilled = sum(d.backfilled for d in rows)
        page = f"/console/x/drops/{quote(project, safe='')}"
        out = [f'<div class="project" data-project="{escape(project)}"><h3>{escape(project)} '
               f'<small>{len(rows)} drop{"" if len(rows) == 1 else "s"} today'
               f'{f", {backfilled} backfilled" if backfilled else ""}</small></h3>']
        if not rows:
            return out[0] + '<p class="quiet">none yet today</p></div>'
        out.append('<table><thead><tr><th>drop</th><th>group</th><th>posted</th><th>by</th><th>backfilled</th>'
                   '<th>feedback</th><th></th></tr></thead><tbody>')
        newest = rows[::-1]
        for d in newest[:limit]:
            link = f"{page}/{quote(d.drop_number, safe='')}"
            out.append(
                f'<tr class="drop{" backfilled" if d.backfilled else ""}" data-drop="{escape(d.drop_number)}">'
                f'<td class="mono">{escape(d.drop_number)}</td><td>{escape(d.group_name or d.group_jid)}</td>'
                f'<td>{_clock(d.message_time)}</td><td>{escape(bare_user(d.submitted_by))}</td>'
                f'<td>{"<b class=flag>backfilled</b>" if d.backfilled else "live"}</td>'
                f'<td class="fb-{escape(d.feedback_status)}">{escape(d.feedback_status)}</td>'
                f'<td><a href="{link}">messages</a></td></tr>')
        out.append("</tbody></table>")
        hidden = newest[limit:] if limit is not None else []
        if hidden:
            flagged = sum(d.backfilled for d in hidden)
            out.append(f'<p><a href="{page}">{len(hidden)} more today{f", {flagged} of them backfilled" if flagged else ""}'
                       f'</a></p>')
        return "".join(out) + "</div>"

    def marks(self, since: float, until: float) -> list[Mark]:
        start = format_ts(datetime.fromtimestamp(since, timezone.utc))
        drops: list[Drop] = self._read(lambda db: db.drops(since=start, backfilled_only=True)) or []
        marks = []
        for d in drops:
            moment = parse_ts(d.message_time).timestamp()
            if moment <= until:
                marks.append(Mark(f"monitor:{d.project}", moment, "backfilled",
                                  f"{d.drop_number} backfilled ({d.group_name or d.group_jid})"))
        return marks

    def names(self) -> dict[str, str]:
        names = {g.jid: g.name for g in (self.config.sim.groups if self.config.sim else [])}
        drops: list[Drop] = self._read(lambda db: db.drops(since=_today_start())) or []
        names.update({d.group_jid: d.group_name for d in drops if d.group_name})
        return names

    def detail(self, key: str) -> tuple[str, str] | None:
        """`<project>`: all of its drops today; `<project>/<drop>`: one drop with its messages and feedback."""
        project, _, number = key.partition("/")
        if not number:
            if project not in {p.name for p in self.config.projects}:
                return None
            rows = self._read(lambda db: db.drops(project=project, since=_today_start())) or []
            return f"{project}: drops today", self._project(project, rows, None)

        def read(db: DropsDB) -> tuple[Drop, str, list] | None:
            drop = db.drop(project, number)
            return None if drop is None else (drop, db.latest_message_id(drop), db.feedback_of(drop))

        found = self._read(read)
        if not found:
            return None
        drop, latest, feedback = found
        messages = "".join(self._message(project, drop, message_id, label)
                           for message_id, label in ((drop.message_id, "first submission"), (latest, "latest"))
                           if message_id and (label == "first submission" or latest != drop.message_id))
        answers = "".join(f'<li><b>{escape(f.kind)}</b> {escape(f.status)} {_clock(f.sent_at)}: {escape(f.text)}'
                          f'{" — " + escape(f.error) if f.error else ""}</li>' for f in feedback)
        html = (f'<p>{escape(drop.group_name or drop.group_jid)} · posted {_clock(drop.message_time)} by '
                f'{escape(bare_user(drop.submitted_by))} · detected {_clock(drop.detected_at)} · '
                f'{"<b class=flag>backfilled</b>" if drop.backfilled else "live"} · feedback '
                f'{escape(drop.feedback_status)}</p><h3>messages</h3>{messages}'
                f'<h3>feedback</h3><ul>{answers or "<li>none</li>"}</ul>')
        return f"{drop.drop_number} ({project})", html

    def _message(self, project: str, drop: Drop, message_id: str, label: str) -> str:
        listening = [p.listen_account for p in self.config.projects if p.name == project]
        account = self.config.accounts.get(listening[0] if listening and listening[0] else
                                           next(iter(self.config.accounts), ""))
        store = account.store if account is not None else None
        row = None
        if store is not None and store.exists():
            conn = open_readonly(store)
            try:
                row = conn.execute(MESSAGE_SQL, (message_id, drop.group_jid)).fetchone()
            except sqlite3.Error:
                row = None
            finally:
                conn.close()
        if row is None:
            return f'<div class="message"><small>{escape(label)} · {escape(message_id)}</small><p>not in the store</p></div>'
        return (f'<div class="message"><small>{escape(label)} · {escape(str(row[0]))} · '
                f'{escape(bare_user(row[1] or ""))} · id {escape(message_id)}</small><p>{escape(row[2] or "")}</p></div>')
