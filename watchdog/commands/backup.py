"""`wa-watchdog backup DIR`: a consistent copy of what cannot be rebuilt, taken while everything runs.

What matters: what the product's slices name (the drops store; each account's
`messages.db` and its transport's session store: monitors/backup.py,
bridge/backup.py), the recovery log and the config. The
SQLite files run in WAL mode, so copying them with `cp` can catch a database
between a WAL write and its checkpoint; SQLite's online backup API copies a
snapshot of one read transaction instead, consistent whatever the writers do.
Files are written 0600 in a 0700 folder: they hold messages and session keys.
Restore is a copy back into the data directory (docs/OPERATIONS.md).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import sys
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from watchdog.components import Config
from watchdog.shared.component import BackupItem
from watchdog.shared.exitcodes import EXIT_CONFIG, EXIT_ERROR, EXIT_OK
from watchdog.shared import clock

MANIFEST = "MANIFEST.json"


class BackupError(Exception):
    """A file that should be copied cannot be; the message names it."""


def items(config: Config) -> tuple[list[BackupItem], list[str]]:
    """What to copy: the slices' stores (watchdog/components.py), then the recovery log and the config; and
    notes on what lives elsewhere (PostgreSQL: pg_dump)."""
    from watchdog import components
    found, notes = components.backup_items(config)
    log = config.watchdog.recovery_log
    found += [BackupItem("recovery_log", path, False)
              for path in [log, *(log.with_name(f"{log.name}.{n}") for n in range(1, 10))] if path.exists()]
    found.append(BackupItem("config", config.path, False))
    return found, notes


def target_path(config: Config, item: BackupItem) -> Path:
    """Where a file goes inside the backup: its path under the data directory, so restore is one copy back."""
    if item.role == "config":
        return Path("config") / item.source.name
    try:
        return Path("data") / item.source.relative_to(config.data_dir)
    except ValueError:  # a store configured outside the data directory
        return Path("elsewhere") / item.role.replace(":", "-") / item.source.name


def _private(path: Path) -> None:
    os.chmod(path, 0o600)


def copy_sqlite(source: Path, target: Path) -> int:
    """SQLite's online backup (one read transaction: consistent under WAL while writers run); returns the pages.

    The copy is one self-contained file (rollback journal; the service turns WAL on again when it opens it).
    Reading may create the source's -wal/-shm; run as root, SQLite gives them the database file's owner.
    """
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode = DELETE")
            pages = dst.execute("PRAGMA page_count").fetchone()[0]
            if dst.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise BackupError(f"the copy of {source} fails SQLite's quick_check")
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise BackupError(f"cannot back up {source}: {exc}") from None
    finally:
        src.close()
    return pages


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def backup(config: Config, into: Path, now: datetime | None = None) -> tuple[Path, list[dict], list[str]]:
    """Write one dated backup folder inside `into`; returns it, the manifest entries and the notes."""
    stamp = (now or clock.now()).strftime("%Y%m%dT%H%M%SZ")
    folder = into / f"wa-watchdog-{stamp}"
    into.mkdir(parents=True, exist_ok=True)
    folder.mkdir(mode=0o700)
    found, notes = items(config)
    entries = []
    for item in found:
        if not item.source.exists():
            notes.append(f"{item.role}: {item.source} does not exist (not created yet), skipped")
            continue
        relative = target_path(config, item)
        target = folder / relative
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if item.sqlite:
            copy_sqlite(item.source, target)
        else:
            shutil.copyfile(item.source, target)
        _private(target)
        entries.append({"role": item.role, "source": str(item.source), "path": str(relative),
                        "bytes": target.stat().st_size, "sha256": _sha256(target)})
    try:
        release = version("wa-watchdog")
    except PackageNotFoundError:
        release = "unknown"
    manifest = {"created_at": stamp, "wa_watchdog": release, "data_dir": str(config.data_dir),
                "config": str(config.path), "files": entries, "notes": notes}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    _private(folder / MANIFEST)
    return folder, entries, notes


def cmd_backup(config: Config, args: argparse.Namespace) -> int:
    into = Path(args.dir).resolve()
    if into == config.data_dir or into.is_relative_to(config.data_dir):
        print(f"wa-watchdog backup: {into} is inside the data directory {config.data_dir}; back up to another "
              "disk or host", file=sys.stderr)
        return EXIT_CONFIG
    try:
        folder, entries, notes = backup(config, into)
    except FileExistsError as exc:
        print(f"wa-watchdog backup: {exc.filename} already exists; try again in a second", file=sys.stderr)
        return EXIT_ERROR
    except (BackupError, OSError) as exc:
        print(f"wa-watchdog backup: {exc}", file=sys.stderr)
        return EXIT_ERROR
    for entry in entries:
        print(f"{entry['role']:<20} {entry['bytes']:>12,} bytes  {entry['path']}")
    for note in notes:
        print(f"note: {note}")
    print(f"backup written to {folder} (restore: docs/OPERATIONS.md, 'Backup and restore')")
    return EXIT_OK
