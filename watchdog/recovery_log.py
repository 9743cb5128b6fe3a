"""The recovery log: JSON lines under the data directory, one record per event.

Written by the watchdog (exit, hang, unhealthy, rss_limit, restart, healthy,
crash_loop, alert), the bridge (disconnect, reconnect, backfill) and the
monitors (backfill: which drops a window recovered). Several processes
append, so each append takes a short flock on a side file, rotates by size
under that lock, writes one line with O_APPEND and fsyncs: a record that was
logged survives a power cut, and no two writers rotate at once.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

EVENTS = ("exit", "hang", "unhealthy", "rss_limit", "restart", "healthy", "crash_loop", "failed",
          "disconnect", "reconnect", "backfill", "alert", "start", "stop",
          "overloaded", "throttle", "reload")  # a starved child given time; a delayed start; a config reload


class RecoveryLog:
    def __init__(self, path: Path, max_bytes: int = 10 * 1024 * 1024, keep: int = 3) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep

    def append(self, component: str, event: str, **fields: object) -> dict:
        """Append one record; `fields` are cause, pid, new_pid, downtime_ms, message, ... (None is dropped)."""
        if event not in EVENTS:
            raise ValueError(f"unknown recovery event {event!r}")
        record = {"time": time.time(), "component": component, "event": event,
                  **{k: v for k, v in fields.items() if v is not None}}
        line = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._rotate_if_full(len(line))
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        return record

    def _rotate_if_full(self, incoming: int) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size + incoming <= self.max_bytes:
            return
        for n in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))

    def read(self, since: float = 0.0) -> Iterator[dict]:
        """Records newer than `since` (epoch seconds), oldest first, across rotated files."""
        files = [self.path.with_name(f"{self.path.name}.{n}") for n in range(self.keep, 0, -1)] + [self.path]
        for path in files:
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except FileNotFoundError:
                continue
            for line in lines:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn line from a crash mid-write; the rest is still readable
                if record.get("time", 0) >= since:
                    yield record
