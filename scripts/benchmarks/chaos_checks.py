"""What a chaos run checks once it is over (scripts/benchmarks/chaos.py): quiescence, then every posted drop
recorded once, acknowledged once, its webhook event received, every outage backfilled and reported."""
from __future__ import annotations

import json
from collections import Counter
from datetime import datetime

from bridge.schema import WINDOW_SELECT, Window
from scripts.benchmarks.chaos_report import Report
from scripts.benchmarks.chaos_traffic import Post, iso_time
from scripts.benchmarks.system_run import RunningSystem
from scripts.benchmarks.webhook_receiver import WebhookReceiver
from watchdog.shared.recovery_log import RecoveryLog

DROP_EVENTS = ("drop.recorded", "drop.backfilled")


def drop_events(system: RunningSystem) -> dict[str, str]:
    """The outbox's drop.recorded/drop.backfilled events: webhook-id -> drop number."""
    return {event_id: json.loads(payload)["data"]["drop"]["drop_number"] for event_id, payload in system.query(
        "drops", f"SELECT id, payload FROM events WHERE type IN ({', '.join('?' * len(DROP_EVENTS))})", *DROP_EVENTS)}


def unreported_windows(system: RunningSystem, projects: int) -> list[Window]:
    """The store's windows, closed and backfilled, that some project's monitor has not reported in the recovery
    log. A report names its window by id and span (as the window's own times show it): after a restore the
    store numbers its windows again, and a report of an earlier window with the same id is not this one's."""
    reported = {(r["component"], r.get("window_id"), r["message"].split(" ")[1])
                for r in RecoveryLog(system.data_dir / "recoveries.jsonl").read()
                if r["event"] == "backfill" and r["component"].startswith("monitor:")}
    windows = [Window(*row) for row in system.query("messages", WINDOW_SELECT)]
    return [w for w in windows if w.ended_at and w.backfill_status != "pending"
            and any((f"monitor:p{n}", w.id, w.span) not in reported for n in range(1, projects + 1))]


def quiescent(system: RunningSystem, posts: list[Post], projects: int, receiver: WebhookReceiver) -> bool:
    """Everything posted is recorded and acknowledged, every outage is closed, backfilled and reported,
    and the receiver has every drop event of the outbox."""
    if not system.all_healthy():
        return False
    if system.query("drops", "SELECT COUNT(*) FROM drops") != [(len(posts),)]:
        return False
    if system.query("drops", "SELECT COUNT(*) FROM feedback WHERE status = 'pending'") != [(0,)]:
        return False
    acked = {s["text"].split()[1] for s in system.sent() if len(s["text"].split()) > 1}
    if not {p.drop for p in posts} <= acked:
        return False
    windows = system.query("messages", "SELECT id, ended_at IS NOT NULL AND backfill_status != 'pending' "
                                       "FROM disconnect_windows")
    if not all(done for _, done in windows):
        return False
    # Each window of the store, reported to every project (after a restore the drops store also remembers
    # windows of the file replaced: those are not the store's any more)
    reported = set(system.query("drops", "SELECT project, window_id FROM reported_windows "
                                         "WHERE reported_at IS NOT NULL AND account = 'main'"))
    if not {(f"p{n}", window) for window, _ in windows for n in range(1, projects + 1)} <= reported:
        return False
    if unreported_windows(system, projects):
        return False
    return drop_events(system).keys() <= receiver.accepted().keys()


def check(system: RunningSystem, posts: list[Post], projects: int, report: Report, receiver: WebhookReceiver) -> None:
    report.posted = len(posts)
    report.unreported_windows = [f"{w.id} {w.span}" for w in unreported_windows(system, projects)]
    recorded = Counter(r["event"] for r in RecoveryLog(system.data_dir / "recoveries.jsonl").read())
    report.hangs, report.clock_steps_recorded = recorded["hang"], recorded["clock_step"]
    events = drop_events(system)
    outbox = Counter(events.values())
    accepted = receiver.accepted()
    received = {drop for event_id, drop in events.items() if event_id in accepted}
    report.webhook_redelivered = sum(n - 1 for n in accepted.values())
    report.webhook_bad_signatures = receiver.bad_signatures
    rows = {(project, drop): (group, submitter, backfilled) for project, drop, group, submitter, backfilled in
            system.query("drops", "SELECT project, drop_number, group_jid, submitted_by, backfilled FROM drops")}
    submissions = Counter(system.query("drops", "SELECT d.project, d.drop_number FROM drop_events e "
                                                "JOIN drops d ON d.id = e.drop_id"))
    recorded = {drop for _, drop in rows}
    report.webhook_unknown = [event_id for event_id, body in receiver.events().items()
                              if event_id not in events or body["data"]["drop"]["drop_number"] not in recorded]
    acks = Counter(s["text"].split()[1] for s in system.sent() if len(s["text"].split()) > 1)
    windows = [(iso_time(start), iso_time(end)) for start, end in
               system.query("messages",
                            "SELECT started_at, ended_at FROM disconnect_windows WHERE ended_at IS NOT NULL")]
    report.windows = len(windows)
    for post in posts:
        row = rows.get((post.project, post.drop))
        if row is None:
            report.missed.append(post.drop)
            continue
        report.recorded += 1
        if submissions[(post.project, post.drop)] > 1:
            report.duplicated.append(post.drop)
        if row[:2] != (post.group, post.contractor):
            report.misattributed.append(post.drop)
        if acks[post.drop] == 0:
            report.ack_missing.append(post.drop)
        elif acks[post.drop] > 1:
            report.ack_duplicates.append(post.drop)
        if outbox[post.drop] == 0:
            report.events_missing.append(post.drop)
        elif outbox[post.drop] > 1:
            report.events_duplicated.append(post.drop)
        if post.drop not in received:
            report.webhook_lost.append(post.drop)
        if outages := [(start, end) for start, end in windows if start <= post.at <= end]:
            report.outage_posts += 1
            if not row[2] and not all(_rewritten(post, window, report.restore_stops) for window in outages):
                report.not_backfilled.append(post.drop)


def _rewritten(post: Post, window: tuple[datetime, datetime], stops: list[datetime]) -> bool:
    """Posted before a restore's stop, inside the window the restored store opened for it (from its last
    heartbeat to the restart): recorded live then, whatever that window says now."""
    start, end = window
    return any(start <= stop <= end and post.at <= stop for stop in stops)
