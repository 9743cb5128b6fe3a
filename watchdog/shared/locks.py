"""flock-based ownership files (run/watchdog.lock, session.lock) that no stranger can keep hostage.

Why: flock works on any open descriptor, read-only included, so whoever can
open a lock file can hold it forever. The files are 0600 in 0700 directories
(only the service user and root can open them), and a lock held by a process
that is not the owner the file names (the kernel's /proc/locks says who holds
it; the owner writes its pid right after locking) is not waited for: after a short grace the
file is replaced by a fresh one (a new inode nobody holds), with a warning.
"""
from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from loguru import logger

from watchdog.shared import file_modes

STRANGER_GRACE = 0.3  # seconds: an owner writes its pid microseconds after locking; give it this long


def open_lock(path: Path) -> int:
    """The lock file (0600) in its 0700 directory (run/, a session directory)."""
    file_modes.ensure_dir(path.parent, file_modes.PRIVATE_DIR)
    return file_modes.open_private(path)


def try_lock(fd: int, shared: bool = False) -> bool:
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def recorded_pid(fd: int) -> int | None:
    """The pid the owner wrote into the lock file, if any."""
    try:
        return int(os.pread(fd, 32, 0).decode("ascii").strip())
    except (ValueError, UnicodeDecodeError, OSError):
        return None


def write_owner(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)


def holders(fd: int) -> set[int] | None:
    """Pids holding a flock on the file of `fd`, from /proc/locks (None if it cannot be read)."""
    st = os.fstat(fd)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        lines = Path("/proc/locks").read_text(encoding="ascii", errors="replace").splitlines()
    except OSError:
        return None
    found = set()
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; waiters have "->" after the number
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == key:
            found.add(int(fields[4]))
    return found


def held_by_stranger(fd: int) -> bool:
    """True if the lock is held, but not by the pid written in the file (its owner writes it right after locking)."""
    pid = recorded_pid(fd)
    held = holders(fd)
    if held is None:  # no /proc/locks: trust a live recorded pid
        return pid is None or not Path(f"/proc/{pid}").exists()
    return bool(held) and pid not in held


def replace(path: Path, fd: int) -> int:
    """Unlink a lock file held by a stranger and open a fresh one in its place (not yet locked)."""
    logger.warning("{} is held by a process that is not its owner (pid {} named in it): replacing the file",
                   path, recorded_pid(fd) or "none")
    path.unlink(missing_ok=True)
    os.close(fd)
    return open_lock(path)


class Held(Exception):
    """Another live process owns the lock."""

    def __init__(self, path: Path, pid: int | None) -> None:
        super().__init__(f"{path} is held by pid {pid if pid is not None else 'unknown'}")
        self.path = path
        self.pid = pid


def take(path: Path, wait: bool = False) -> tuple[int, bool]:
    """Own `path` for as long as the returned fd stays open: (fd, waited). The owner's pid is not written yet
    (`write_owner`): the caller may want the previous one (`recorded_pid`) first.

    A live owner: `Held`, or with `wait` block until the kernel hands the lock over (waited = True).
    A stranger's lock is replaced after STRANGER_GRACE.
    """
    fd = open_lock(path)
    first_refusal: float | None = None
    while not try_lock(fd):
        if not held_by_stranger(fd):
            if not wait:
                pid = recorded_pid(fd)
                os.close(fd)
                raise Held(path, pid)
            fcntl.flock(fd, fcntl.LOCK_EX)
            return fd, True
        first_refusal = first_refusal or time.monotonic()
        if time.monotonic() - first_refusal >= STRANGER_GRACE:
            fd = replace(path, fd)
        else:
            time.sleep(0.02)
    return fd, False
