"""One owner per WhatsApp session: an exclusive flock on `<session_dir>/session.lock`.

Why flock: the kernel releases it when the holder dies in any way (kill -9
included), so a crash never leaves a stale lock, and two bridges can never
both hold it. WhatsApp allows one websocket per session; a second client
takes the session over (stream replaced) and the two would fight forever.
The lock file holds the owner's pid so the refused one (and the watchdog)
can name it. A warm standby (`wait=True`) blocks on the same lock: the kernel
hands it over the moment the owner dies, so there is still one owner, always.

The session directory is 0700 and the lock 0600 (`watchdog.shared.locks`): no other
local user can open it, and a lock held by something that is not a bridge of
this account (a stray `flock`, a leftover descriptor) is replaced after a short
grace instead of keeping the bridge out forever.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from watchdog.shared.data_dir import not_usable
from watchdog.shared import file_modes, locks

LOCK_NAME = "session.lock"


class SessionHeld(Exception):
    """Another live process holds the session lock."""

    def __init__(self, path: Path, pid: int | None) -> None:
        super().__init__(f"session {path} is held by pid {pid if pid is not None else 'unknown'}")
        self.path = path
        self.pid = pid


def lock_path(session_dir: Path) -> Path:
    return session_dir / LOCK_NAME


class SessionLock:
    """Held for the life of the process; the fd stays open (closing it releases the lock).

    `wait=True` blocks until the holder is gone (a standby); otherwise a held session raises SessionHeld.
    """

    def __init__(self, session_dir: Path, wait: bool = False) -> None:
        self.path = lock_path(session_dir)
        try:  # a standby blocks: the kernel hands the lock over when the owner dies
            file_modes.ensure_dir(session_dir, file_modes.PRIVATE_DIR)
            self._fd, self.waited = locks.take(self.path, wait)  # waited: that owner just let go
        except locks.Held as exc:
            raise SessionHeld(self.path, exc.pid) from None
        except OSError as exc:  # e.g. made by root before the service user ran: say so, no traceback
            raise not_usable("session directory", session_dir, exc) from None
        self.previous_owner: int | None = locks.recorded_pid(self._fd)  # the pid the file named when we got it
        locks.write_owner(self._fd)
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
        if not locks.try_lock(fd, shared=True):
            return locks.recorded_pid(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
