"""`wa-watchdog logs`: every component's log file (and the watchdog's own) merged in time order, or followed.

What an operator would otherwise do with `tail -f` on files they first have to
find. Log files live in `<data_dir>/logs/<component>.log` and rotate by size
into `.1 .2 .3` (`watchdog/core/child_output.py`); every line starts with date, time
with milliseconds, name and pid (`watchdog/shared/logs.py`), which is what the merge
sorts by. The console shows the same tails (`tail`).
"""
from __future__ import annotations

import argparse
import heapq
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from watchdog.shared import logs
from watchdog.shared.human import parse_since, unknown_components
from watchdog.core.child_output import log_path
from watchdog.shared.config import Config
from watchdog.shared.exitcodes import EXIT_ERROR, EXIT_OK
from watchdog.shared import clock

ROTATED_KEPT = 3  # RotatingFile's default `keep`
FOLLOW_PERIOD = 0.2  # seconds between looks at the files while following
TAIL_BLOCK = 64 * 1024


def component_names(config: Config) -> list[str]:
    """The watchdog, then every program it runs, then any other log file found (an older config's)."""
    from watchdog.components import all_programs  # here: the console (control side) imports this module
    names = ["watchdog", *(program.name for program in all_programs(config))]
    known = {log_path(config.data_dir, n).name for n in names}
    folder = log_path(config.data_dir, "watchdog").parent
    extra = sorted(p.name.removesuffix(".log") for p in folder.glob("*.log") if p.name not in known) \
        if folder.is_dir() else []
    return names + extra


def _files(path: Path) -> list[Path]:
    """A log file's rotated predecessors (oldest first), then itself; only those that exist."""
    return [p for p in logs.rotated(path, ROTATED_KEPT) if p.exists()]


def _tail_of(path: Path, count: int) -> list[str]:
    """The last `count` complete lines of one file, reading only as much of its end as needed."""
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            data = b""
            position = end
            while position > 0 and data.count(b"\n") <= count:
                step = min(TAIL_BLOCK, position)
                position -= step
                f.seek(position)
                data = f.read(step) + data
    except FileNotFoundError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    if position > 0:
        lines = lines[1:]  # the first one was cut by the block boundary
    return lines[-count:] if count else []


def tail(path: Path, count: int) -> list[str]:
    """The last `count` lines of a log, across its rotated files when the current one is short."""
    lines: list[str] = []
    for file in reversed(_files(path)):
        lines = _tail_of(file, count - len(lines)) + lines
        if len(lines) >= count:
            break
    return lines


@dataclass(frozen=True, order=True)
class Entry:
    time: float
    order: int  # keeps a file's own order for lines of the same millisecond
    text: str


def _entries(name: str, lines: Iterable[str], rank: int) -> Iterator[Entry]:
    """Lines with their times; one without our format (older logs) gets the time of the line before and a name."""
    last = 0.0
    for n, line in enumerate(lines):
        moment = logs.line_time(line)
        if moment is None:
            yield Entry(last, rank + n, f"{name} | {line}")
        else:
            last = moment
            yield Entry(moment, rank + n, line)


def merged(paths: dict[str, Path], since: float | None, count: int | None) -> list[str]:
    """Lines of all logs in time order: those at or after `since` (None: all), of those the newest `count`."""
    streams = []
    for rank, (name, path) in enumerate(paths.items()):
        if since is None and count is not None:
            lines = tail(path, count)
        else:
            lines = [line for f in _files(path) for line in f.read_text("utf-8", "replace").splitlines()]
        streams.append([e for e in _entries(name, lines, rank << 32) if since is None or e.time >= since])
    result = [e.text for e in heapq.merge(*streams)]
    if count is None:
        return result
    return result[-count:] if count else []


class Follower:
    """New complete lines of a set of log files as they are written, through rotations."""

    def __init__(self, paths: dict[str, Path]) -> None:
        self.paths = paths
        self._where: dict[str, tuple[int, int]] = {}  # name -> (inode, offset)
        self._partial: dict[str, bytes] = {}
        for name, path in paths.items():
            try:
                stat = path.stat()
                self._where[name] = (stat.st_ino, stat.st_size)
            except FileNotFoundError:
                self._where[name] = (0, 0)

    def poll(self) -> list[str]:
        """Lines written since the last call, in time order."""
        new: list[Entry] = []
        for rank, (name, path) in enumerate(self.paths.items()):
            new += _entries(name, self._read(name, path), rank << 32)
        return [e.text for e in sorted(new)]

    def _read(self, name: str, path: Path) -> list[str]:
        inode, offset = self._where[name]
        try:
            stat = path.stat()
        except FileNotFoundError:
            return []
        if stat.st_ino != inode or stat.st_size < offset:  # rotated (or replaced): the new file from its start
            offset = 0
        if stat.st_size == offset:
            self._where[name] = (stat.st_ino, offset)
            return []
        with open(path, "rb") as f:
            f.seek(offset)
            data = self._partial.pop(name, b"") + f.read()
            self._where[name] = (stat.st_ino, f.tell())
        *complete, rest = data.split(b"\n")
        if rest:
            self._partial[name] = rest
        return [line.decode("utf-8", "replace") for line in complete]


def cmd_logs(config: Config, args: argparse.Namespace) -> int:
    known = component_names(config)
    unknown = [c for c in args.component if c not in known]
    if unknown:
        print(f"wa-watchdog logs: {unknown_components(unknown, known)}", file=sys.stderr)
        return EXIT_ERROR
    if args.lines is not None and args.lines < 0:
        print("wa-watchdog logs: --lines must be 0 or more", file=sys.stderr)
        return EXIT_ERROR
    try:
        since = clock.now_s() - parse_since(args.since) if args.since else None
    except ValueError as exc:
        print(f"wa-watchdog logs: {exc}", file=sys.stderr)
        return EXIT_ERROR
    paths = {name: log_path(config.data_dir, name) for name in (args.component or known)}
    follower = Follower(paths) if args.follow else None  # before reading: a line written meanwhile is not lost
    count = args.lines if args.lines is not None else (None if since is not None else 10 if args.follow else 50)
    lines = merged(paths, since, count)
    for line in lines:
        print(line)
    if not lines and not args.follow:
        print(f"no log lines{' in the last ' + args.since if args.since else ''} "
              f"(logs: {log_path(config.data_dir, 'watchdog').parent})", file=sys.stderr)
    while follower is not None:
        sys.stdout.flush()
        time.sleep(FOLLOW_PERIOD)
        for line in follower.poll():
            print(line)
    return EXIT_OK
