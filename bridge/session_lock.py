"""One owner per WhatsApp session: an exclusive flock on `<session_dir>/session.lock`.

Why flock: the kernel releases it when the holder dies in any way (kill -9
included), so a crash never leaves a stale lock, and two bridges can never
both hold it. WhatsApp allows one websocket per session; a second client
takes the session over (stream replaced) and the two would fight forever.
The lock file holds the owner's pid so the refused one (and the watchdog)
can name it. A warm standby (`wait=True`) blocks on the same lock: the kernel
hands it over the moment the owner dies, so there is still one owner, always.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = "session.lock"


class SessionHeld(Exception):
    """Another live process holds the session lock."""

    def __init__(self, path: Path, pid: int | None) -> None:
        super().__init__(f"session {path} is held by pid {pid if pid is not None else 'unknown'}")
        self.path = path
        self.pid = pid


def lock_path(session_dir: Path) -> Path:
    return session_dir / LOCK_NAME


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode("ascii").strip())
    except (ValueError, UnicodeDecodeError):
        return None


class SessionLock:
    """Held for the life of the process; the fd stays open (closing it releases the lock).

    `wait=True` blocks until the holder is gone (a standby); otherwise a held session raises SessionHeld.
    """

    def __init__(self, session_dir: Path, wait: bool = False) -> None:
        self.path = lock_path(session_dir)
        session_dir.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(self._fd)
            os.close(self._fd)
            raise SessionHeld(self.path, pid) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode("ascii"), 0)
        os.fsync(self._fd)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def holder_pid(session_dir: Path) -> int | None:
    """The pid of the live process holding the session, or None if nobody holds it.

    Tests the lock itself (a shared, non-blocking probe released at once) rather than
    trusting the pid in the file, which may belong to a dead process or a reused pid.
    """
    path = lock_path(session_dir)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
