"""File modes for everything under the data directory: nothing for other local users.

Why in code and not only in the systemd unit: the watchdog also runs under
supervisord, from a shell or in the demo, where the umask is usually 022 and
every SQLite file, log and lock would be world-readable (stored WhatsApp
messages, session keys, tokens). So every process sets `UMASK` first, and the
places that create files that hold messages, drops, keys, tokens or locks also
pass explicit modes and tighten what an older version left behind.

Data files may be shared with the service user's group (0640 / 0750, as
systemd's `StateDirectoryMode=0750` does for the data directory); locks,
tokens, endpoints and the WhatsApp session are the service user's alone
(0600 in 0700 directories) so that no other user can even open a lock to hold it.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

UMASK = 0o027
DATA_DIR = 0o750  # data directory, accounts/, logs/: the service user and its group
DATA_FILE = 0o640  # messages.db and its WAL/SHM, drops.db, logs, the recovery log
PRIVATE_DIR = 0o700  # run/, accounts/<name>/session/: locks, tokens, session keys
PRIVATE_FILE = 0o600


def set_umask() -> None:
    """Called first by every `wa-watchdog` process: what SQLite, neonize and loguru create inherits it."""
    os.umask(UMASK)


def _tighten(path: Path, allowed: int) -> None:
    """Remove permission bits outside `allowed` from a file or directory we own (never widen)."""
    try:
        current = stat.S_IMODE(path.stat().st_mode)
        if current & ~allowed:
            os.chmod(path, current & allowed)
    except FileNotFoundError:
        pass
    except PermissionError:  # not ours (e.g. created by root for us): leave it, the owner decides
        pass


def ensure_dir(path: Path, mode: int = DATA_DIR) -> Path:
    """mkdir -p with `mode`; an existing directory is tightened to it only if the mode is PRIVATE_DIR
    (run/, session/: ours by definition). Others may be the operator's (a recovery log in /var/log)."""
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    if mode == PRIVATE_DIR:
        _tighten(path, mode)
    return path


def tighten_data_dir(path: Path) -> None:
    """The data directory itself, if it exists: at most 0750 (systemd's StateDirectoryMode=0750 does the same).

    Never creates it: a query command with a mistyped --data-dir must not leave a directory behind."""
    _tighten(path, DATA_DIR)


def restrict(*paths: Path, mode: int = DATA_FILE) -> None:
    """Tighten existing files (e.g. an older version's 0644 messages.db and its -wal/-shm) to `mode`."""
    for path in paths:
        _tighten(path, mode)


def sqlite_files(db: Path) -> tuple[Path, Path, Path]:
    """A SQLite database and its WAL and shared-memory files (SQLite gives them the database's mode)."""
    return db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")


def prepare_sqlite(db: Path, mode: int = DATA_FILE) -> None:
    """Create the database file with `mode` before SQLite does, and tighten one left by an older version.

    SQLite creates -wal and -shm with the mode of the database file, so this covers all three.
    """
    ensure_dir(db.parent)
    os.close(os.open(db, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode))
    restrict(*sqlite_files(db), mode=mode)


def open_private(path: Path, flags: int = os.O_RDWR) -> int:
    """os.open with O_CREAT at 0600; an existing file is tightened to 0600 too (the caller makes the directory)."""
    fd = os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) & ~PRIVATE_FILE:
            os.fchmod(fd, PRIVATE_FILE)
    except PermissionError:
        pass
    return fd


def write_atomic(path: Path, text: str, mode: int = PRIVATE_FILE) -> None:
    """Replace `path` with `text` in one step (readers never see half a file), created with `mode`."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)
    os.replace(tmp, path)
