"""The bridge's liveness heartbeat: `<session_dir>/bridge.alive`, one record rewritten in place every tick.

Why not `alive_at` in messages.db, as before: every monitor follows the
store's directory with inotify, so a commit every second woke every monitor
every second (22 % of a core for an idle tree at 100 projects). The session
directory is another directory (no monitor watches it) and belongs to the
session lock's owner, whose liveness this is. If an operator pointed
`session_dir` at the store's own directory, the file goes to the run
directory instead.

The record is fixed-width text (`pid alive_at`), written with one pwrite at
offset 0: no fsync, no rename, so a tick is one syscall and no directory
entry changes. A kill -9 cannot tear a write (the syscall completes or never
started); a power cut can leave an old or unreadable record, and then the
crash window starts at the older `alive_at` in bridge_state (more backfill,
nothing lost), as a missing file after an upgrade does.
"""
from __future__ import annotations

import os
from pathlib import Path

from loguru import logger

from bridge.schema import parse_ts
from watchdog import endpoints, file_modes

FILE_NAME = "bridge.alive"
PID_WIDTH = 10  # wider than any pid (pid_max <= 2**22): every record has the same length


def alive_path(session_dir: Path, store: Path, data_dir: Path, component: str) -> Path:
    """Where the bridge of this session heartbeats: its session directory, unless that is the store's."""
    if session_dir.resolve() != store.parent.resolve():
        return session_dir / FILE_NAME
    return endpoints.run_dir(data_dir) / f"{component.replace(':', '-')}.alive"


def read_alive(path: Path) -> tuple[int, str] | None:
    """(pid, alive_at) of the last heartbeat, or None if there is none or it cannot be read."""
    try:
        pid, at = path.read_text(encoding="ascii").split(maxsplit=1)
        at = at.strip()
        parse_ts(at)
        return int(pid), at
    except (OSError, ValueError, UnicodeDecodeError):
        return None


class AliveFile:
    """The heartbeat writer; the file is opened (0600, its directory 0700) by the first beat."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1
        self._failing = False  # logged once per spell of failures

    def read(self) -> tuple[int, str] | None:
        return read_alive(self.path)

    def beat(self, at: str) -> None:
        """Record that this process is alive at `at`; a failure is logged, never raised (the store keeps a
        coarser `alive_at`, so the worst case is an earlier crash window)."""
        record = f"{os.getpid():>{PID_WIDTH}} {at}\n".encode("ascii")
        try:
            if self._fd < 0:
                file_modes.ensure_dir(self.path.parent, file_modes.PRIVATE_DIR)
                self._fd = file_modes.open_private(self.path, os.O_WRONLY)
                os.ftruncate(self._fd, len(record))  # a longer record of an older format would leave a tail
            os.pwrite(self._fd, record, 0)
            self._failing = False
        except OSError as exc:
            if not self._failing:
                logger.warning("cannot write the heartbeat {}: {} (a crash window would start earlier)",
                               self.path, exc)
            self._failing = True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
