"""The recovery log's last seven days in memory, read incrementally.

The console draws the timeline and the incidents from the recovery log on
every page view; parsing 10,000 JSON lines each time would cost more than the
page may take. So the records are parsed once and only what was appended
since the last look is read (a rotation, seen as a new inode or a shorter
file, reloads everything).
"""
from __future__ import annotations

import bisect
import json
import math
import os

from watchdog.shared.recovery_log import RecoveryLog
from watchdog.shared import clock

KEEP_S = 7 * 86400  # the longest timeline range


class RecordCache:
    def __init__(self, log: RecoveryLog, keep_s: float = KEEP_S) -> None:
        self.log = log
        self.keep_s = keep_s
        self._records: list[dict] = []
        self._where: tuple[int, int] | None = None  # (inode, offset) read so far of the current file
        self._partial = b""
        self.version = 0  # grows whenever the records change
        self.first_time = math.inf  # the oldest record ever read, kept or not: nothing is known before it

    def records(self) -> list[dict]:
        """All records of the last `keep_s` seconds, oldest first (do not modify)."""
        self._refresh()
        return self._records

    def since(self, moment: float) -> list[dict]:
        records = self.records()
        start = bisect.bisect_left(records, moment, key=lambda r: r.get("time", 0.0))
        return records[start:]

    def _refresh(self) -> None:
        try:
            stat = os.stat(self.log.path)
        except FileNotFoundError:
            if self._where is not None:
                self._reload()
            return
        if self._where is None or stat.st_ino != self._where[0] or stat.st_size < self._where[1]:
            self._reload()
            return
        if stat.st_size == self._where[1]:
            return
        with open(self.log.path, "rb") as f:
            f.seek(self._where[1])
            data = self._partial + f.read()
            self._where = (stat.st_ino, f.tell())
        *complete, self._partial = data.split(b"\n")
        added = [r for r in (_parse(line) for line in complete) if r is not None]
        if added:
            self.first_time = min(self.first_time, *(r.get("time", 0.0) for r in added))
            self._records.extend(added)
            self._records.sort(key=lambda r: r.get("time", 0.0))  # several writers: nearly sorted already
            self._trim()
            self.version += 1

    def _reload(self) -> None:
        cutoff = clock.now_s() - self.keep_s
        path = self.log.path
        records: list[dict] = []
        for n in range(self.log.keep, 0, -1):
            try:
                records += filter(None, map(_parse, path.with_name(f"{path.name}.{n}").read_bytes().split(b"\n")))
            except FileNotFoundError:
                continue
        self._where, self._partial = None, b""
        try:
            with open(path, "rb") as f:
                *complete, self._partial = f.read().split(b"\n")
                self._where = (os.fstat(f.fileno()).st_ino, f.tell())
            records += filter(None, map(_parse, complete))
        except FileNotFoundError:
            pass
        self.first_time = min((r.get("time", 0.0) for r in records), default=math.inf)
        self._records = sorted((r for r in records if r.get("time", 0.0) >= cutoff), key=lambda r: r.get("time", 0.0))
        self.version += 1

    def _trim(self) -> None:
        cutoff = clock.now_s() - self.keep_s
        if self._records and self._records[0].get("time", 0.0) < cutoff:
            del self._records[:bisect.bisect_left(self._records, cutoff, key=lambda r: r.get("time", 0.0))]


def _parse(line: bytes) -> dict | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None  # a torn line from a crash mid-write
    return record if isinstance(record, dict) else None
