"""Wake a monitor when the bridge writes its store: inotify on messages.db and its WAL.

The bridge commits by write()s to `messages.db-wal` (and, at a checkpoint, to
`messages.db`); each write is an IN_MODIFY on the store's directory, named by
the file. Watching the directory, not the files, also sees the WAL being
created again and a store replaced by rename. The -shm index is written
through mmap, which inotify does not see and we do not need.

Why `inotify_simple`: it is the ~100 lines of ctypes around inotify_init1 /
inotify_add_watch / read that we would otherwise write, and nothing more
(no threads, no event loop of its own), so the event loop reads its fd.
"""
from __future__ import annotations

from pathlib import Path

from inotify_simple import INotify, flags

WATCHED = flags.MODIFY | flags.CREATE | flags.MOVED_TO | flags.DELETE


class StoreWatch:
    """An inotify descriptor that is readable after the store at `path` (or its WAL) was written."""

    def __init__(self, path: Path) -> None:
        """Raises OSError when inotify is not available (e.g. fs.inotify.max_user_instances reached)."""
        self.names = frozenset({path.name, f"{path.name}-wal"})
        self._inotify = INotify(nonblocking=True)
        try:
            self._inotify.add_watch(path.parent, WATCHED)
        except OSError:
            self._inotify.close()
            raise

    def fileno(self) -> int:
        return self._inotify.fileno()

    def drain(self) -> bool:
        """Read every pending event; True if one was about the store (others are files beside it) or some were lost."""
        try:
            events = self._inotify.read(timeout=0)
        except BlockingIOError:
            return False
        return any(event.name in self.names or event.mask & flags.Q_OVERFLOW for event in events)

    def close(self) -> None:
        self._inotify.close()
