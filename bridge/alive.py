"""The bridge's liveness heartbeat: `<session_dir>/bridge.alive`, one record rewritten in place every tick.

Why not `alive_at` in messages.db, as before: every monitor follows the
store's directory with inotify, so a commit every second woke every monitor
every second (22 % of a core for an idle tree at 100 projects). The session
directory is another directory (no monitor watches it) and belongs to the
session lock's owner, whose liveness this is. If an operator pointed
`session_dir` at the store's own directory, the file goes to the run
directory instead.

The record is fixed-width text (`pid messages boot_id boottime alive_at`), written with one
pwrite at offset 0: no fsync, no rename, so a tick is one write and no
directory entry changes. A kill -9 cannot tear a write (the syscall completes
or never started); a power cut can leave an old or unreadable record, and then
the crash window starts at the older `alive_at` in bridge_state (more
backfill, nothing lost), as a missing file after an upgrade does. The boot's
clock (`clock.Instant`) says which of the two is later and when the beat was on
today's wall clock, should the wall clock have been stepped since.

`messages` is the store's newest rowid at the beat: a store put back from a
backup (docs/OPERATIONS.md) has fewer, and then the file (which no backup
holds, and which says when the process died, not what the store has) must not
date the window: the store's own `alive_at` does, so the gap is backfilled.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from loguru import logger

from bridge.schema import format_epoch, parse_ts
from watchdog.shared import endpoints, file_modes
from watchdog.shared.clock import Instant

FILE_NAME = "bridge.alive"
PID_WIDTH = 10  # wider than any pid (pid_max <= 2**22): every record has the same length
ROWID_WIDTH = 20  # any SQLite rowid (a signed 64-bit integer)
BOOT_ID_WIDTH = 36  # a UUID, as /proc/sys/kernel/random/boot_id holds it


class Beat(NamedTuple):
    pid: int
    messages: int  # the store's newest messages rowid then
    at: str  # a store timestamp (bridge.schema.format_ts)
    instant: Instant  # the same moment on the boot's clock too


def alive_path(session_dir: Path, store: Path, data_dir: Path, component: str) -> Path:
    """Where the bridge of this session heartbeats: its session directory, unless that is the store's."""
    if session_dir.resolve() != store.parent.resolve():
        return session_dir / FILE_NAME
    return endpoints.run_dir(data_dir) / f"{component.replace(':', '-')}.alive"


def read_alive(path: Path) -> Beat | None:
    """The last heartbeat, or None if there is none or it cannot be read."""
    try:
        pid, messages, boot, boottime, at = path.read_text(encoding="ascii").split(maxsplit=4)
        at = at.strip()
        return Beat(int(pid), int(messages), at, Instant("" if boot == "-" else boot, float(boottime),
                                                         parse_ts(at).timestamp()))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


class AliveFile:
    """The heartbeat writer; the file is opened (0600, its directory 0700) by the first beat."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1
        self._failing = False  # logged once per spell of failures

    def read(self) -> Beat | None:
        return read_alive(self.path)

    def beat(self, at: Instant, messages: int) -> None:
        """Record that this process is alive at `at`, its store holding `messages`; a failure is logged, never
        raised (the store keeps a coarser `alive_at`, so the worst case is an earlier crash window)."""
        record = (f"{os.getpid():>{PID_WIDTH}} {messages:>{ROWID_WIDTH}} {at.boot_id or '-':<{BOOT_ID_WIDTH}} "
                  f"{at.boottime:>20.6f} {format_epoch(at.wall)}\n").encode("ascii")
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
