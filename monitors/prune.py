"""`wa-watchdog prune --older-than 180d`: drop old rows from each account's messages.db, never one still needed.

messages.db grows with every group message (docs/OPERATIONS.md, Retention).
A message may go only when it is older than the limit AND every project that
listens on the account has read past it (its cursor in the drops store), so
a monitor that is behind, or a disabled project that resumes later, loses
nothing. The newest row always stays: the messages table has no
AUTOINCREMENT, and deleting the highest rowid would let SQLite hand that rowid
out again, under a monitor's cursor. Sent and failed outbox rows (with their
request records), receipts, quarantined messages, connection events and
finished disconnect windows older than the limit go too (a pending send never
does). Deletes run in short batches, so a running bridge waits at
most one batch for its next write. The drops store is the business record and
is not touched. Freed pages are reused by new messages; the file shrinks only
with VACUUM (docs).
"""
from __future__ import annotations

import argparse
import sqlite3
import sys
from datetime import timedelta

from bridge.schema import format_ts
from monitors.cluster_config import reader_key
from monitors.drops_store import StoreUnavailable, drops_db_path, open_drops_store
from bridge.config import AccountConfig
from watchdog.components import Config
from watchdog.shared.exitcodes import EXIT_CONFIG, EXIT_ERROR, EXIT_OK
from watchdog.shared.human import parse_since
from watchdog.shared import clock

BATCH = 5000  # rows per transaction

# table -> the condition a row must meet (besides its age) to go; `?` is the cutoff timestamp.
# In this order: an outbox row goes before its request record. Receipts and quarantine ids are AUTOINCREMENT,
# so their readers' cursors are safe from reuse.
AGED = {
    "outbox": "status != 'pending' AND created_at < ?",
    "outbox_requests": "created_at < ? AND seq NOT IN (SELECT seq FROM outbox)",
    "receipts": "stored_at < ?",
    "quarantine": "at < ?",
    "connection_events": "at < ?",
    "disconnect_windows": "ended_at IS NOT NULL AND ended_at < ? AND backfill_status != 'pending'",
}


def read_limit(config: Config, account: AccountConfig) -> int:
    """The highest rowid every project listening on `account` has processed (0: none may go yet)."""
    listeners = [p.name for p in config.projects if p.listen_account == account.name]
    if not listeners:
        return sys.maxsize
    if not config.database.url and not drops_db_path(config.data_dir).exists():
        return 0  # no monitor has recorded anything yet
    drops = open_drops_store(config, readonly=True)
    try:
        return min(drops.cursor(project, reader_key(account.name, config.cluster)) for project in listeners)
    finally:
        drops.close()


def prune_store(path: str, cutoff: str, read_up_to: int, dry_run: bool) -> dict[str, int]:
    """Delete (or with dry_run count) what may go; returns rows per table."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
    try:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        aged = {table: condition for table, condition in AGED.items() if table in tables}  # (a store not yet migrated)
        newest = conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM messages").fetchone()[0]
        bound = min(read_up_to, newest - 1)
        where = "timestamp < ? AND rowid <= ?"
        counts = {"messages": conn.execute(f"SELECT COUNT(*) FROM messages WHERE {where}",
                                           (cutoff, bound)).fetchone()[0]}
        counts |= {table: conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {condition}", (cutoff,)).fetchone()[0]
                   for table, condition in aged.items()}
        if dry_run:
            return counts
        while True:
            conn.execute("BEGIN IMMEDIATE")
            rows = conn.execute(f"SELECT rowid, id, chat_jid FROM messages WHERE {where} LIMIT {BATCH}",
                                (cutoff, bound)).fetchall()
            conn.executemany("DELETE FROM message_meta WHERE id = ? AND chat_jid = ?", [r[1:] for r in rows])
            conn.executemany("DELETE FROM messages WHERE rowid = ?", [r[:1] for r in rows])
            conn.execute("COMMIT")
            if len(rows) < BATCH:
                break
        for table, condition in aged.items():
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(f"DELETE FROM {table} WHERE {condition}", (cutoff,))
            conn.execute("COMMIT")
        return counts
    finally:
        conn.close()


def cmd_prune(config: Config, args: argparse.Namespace) -> int:
    try:
        age = parse_since(args.older_than)
    except ValueError:
        print(f"wa-watchdog prune: --older-than {args.older_than!r}: expected a number and a unit s, m, h or d "
              "(e.g. 180d)", file=sys.stderr)
        return EXIT_CONFIG
    cutoff = format_ts(clock.now() - timedelta(seconds=age))
    status = EXIT_OK
    for account in config.accounts.values():
        if not account.store.exists():
            print(f"{account.name}: no store at {account.store}, nothing to prune")
            continue
        try:
            counts = prune_store(str(account.store), cutoff, read_limit(config, account), args.dry_run)
        except (sqlite3.Error, StoreUnavailable) as exc:
            print(f"wa-watchdog prune: {account.name}: {exc}; nothing more removed", file=sys.stderr)
            status = EXIT_ERROR
            continue
        verb = "would remove" if args.dry_run else "removed"
        print(f"{account.name}: {verb} " + ", ".join(f"{n:,} {table}" for table, n in counts.items())
              + f" older than {cutoff[:19]} UTC ({account.store})")
    return status
