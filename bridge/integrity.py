"""A bounded `PRAGMA quick_check` at start: a corrupt SQLite store is refused, never served on.

Why at start and bounded: a zeroed page goes unnoticed until some query reads
it (readers such as whatsapp-mcp get "malformed", rows go missing), so the
bridge and the monitors check their stores before they serve. quick_check is
O(file size), so it gets a time budget: a store too large to check within it
is logged as not fully checked rather than delaying every restart. Used for
messages.db (bridge) and the SQLite drops store (monitors; `check_or_refuse`).
"""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from loguru import logger

CHECK_BUDGET = 2.0  # seconds
RESTORE_DOC = "docs/OPERATIONS.md, 'A corrupt store'"


class CorruptStore(Exception):
    """The store failed its integrity check: exit 2 with this message (it names the file and what to do)."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path} is corrupt ({problem}); refusing to serve on it. Stop the service and restore "
                         f"it from a backup or salvage it with sqlite3 .recover, as {RESTORE_DOC} describes")
        self.path = path
        self.problem = problem


def sqlite_error_kind(exc: sqlite3.Error) -> str:
    """SQLite's primary result code name of an error, e.g. SQLITE_BUSY for SQLITE_BUSY_SNAPSHOT ('' if unknown)."""
    return "_".join((getattr(exc, "sqlite_errorname", "") or "").split("_")[:2])


def is_corrupt(exc: sqlite3.Error) -> bool:
    return sqlite_error_kind(exc) in ("SQLITE_CORRUPT", "SQLITE_NOTADB")


def is_locked(exc: sqlite3.Error) -> bool:
    return sqlite_error_kind(exc) in ("SQLITE_BUSY", "SQLITE_LOCKED")


def is_full(exc: sqlite3.Error) -> bool:
    return sqlite_error_kind(exc) == "SQLITE_FULL"


def quick_check(path: Path, budget: float = CHECK_BUDGET) -> str | None:
    """SQLite's first complaint about `path`, or None if it is sound (or could not be checked within `budget`)."""
    if not path.exists() or path.stat().st_size == 0:
        return None  # a new store: nothing to check
    deadline = time.monotonic() + budget
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=1.0)
    except sqlite3.Error as exc:
        return str(exc)
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10000)
    try:
        rows = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
    except sqlite3.OperationalError as exc:
        if "interrupt" in str(exc):
            logger.warning("{}: integrity not fully checked within {:g} s (a large store); going on", path, budget)
            return None
        if "locked" in str(exc) or "busy" in str(exc):
            logger.warning("{}: integrity not checked: {}", path, exc)
            return None
        return str(exc)
    except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
        return str(exc)
    finally:
        conn.close()
    return None if rows == ["ok"] else "; ".join(rows)


def check_or_refuse(path: Path, budget: float = CHECK_BUDGET) -> None:
    """Raise CorruptStore if `path` fails quick_check (the caller exits 2)."""
    problem = quick_check(path, budget)
    if problem is not None:
        raise CorruptStore(path, problem)
