"""Children's output: every line to the watchdog's own stderr and to the component's log file, in our line format.

The watchdog must never block on its own output: under systemd stderr is a
pipe to journald, in tests it may be a pipe nobody reads. A blocked write
would freeze supervision, so its stderr is a `logs.StderrSink`, which writes
only what the descriptor accepts right now and counts what it had to drop.
"""
from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path
from typing import BinaryIO

from loguru import logger

from watchdog.shared import endpoints, file_modes, logs
from watchdog.shared.logs import StderrSink

READ_CHUNK = 65536


class RotatingFile:
    """Append-only log file (0640) rotated by size into .1 .. .keep (oldest dropped).

    A write that fails (disk full, I/O error) is dropped and counted, never raised: the
    copy to stderr still happens, and the file says how much is missing once it can be written again.
    """

    def __init__(self, path: Path, max_bytes: int, keep: int = 3) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self.dropped_bytes = 0
        self._error = ""
        file_modes.ensure_dir(path.parent)
        self._file = self._open()

    def _open(self) -> BinaryIO:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, file_modes.DATA_FILE)
        file_modes.restrict(self.path)
        return os.fdopen(fd, "ab", buffering=0)

    def write(self, data: bytes) -> None:
        notice = (f"[wa-watchdog: {self.dropped_bytes} bytes of output not logged: {self._error}]\n".encode()
                  if self.dropped_bytes else b"")
        try:
            if self._file.closed:  # a rotation that could not open the new file
                self._file = self._open()
            if self._file.tell() + len(data) > self.max_bytes and self._file.tell() > 0:
                self._rotate()
            if (self._file.write(notice + data) or 0) < len(notice) + len(data):  # unbuffered: a short write
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # is a full disk
        except OSError as exc:
            if not self.dropped_bytes:
                logger.error("log file {} not written: {}", self.path, exc.strerror or exc)
            self._error = exc.strerror or str(exc)
            self.dropped_bytes += len(data)
            return
        self.dropped_bytes = 0

    def _rotate(self) -> None:
        self._file.close()
        logs.rotate(self.path, self.keep)
        self._file = self._open()

    def close(self) -> None:
        self._file.close()


def log_path(data_dir: Path, component: str) -> Path:
    return data_dir / "logs" / endpoints.file_name(component, ".log")


class ChildOutput:
    """Copies one child's combined stdout+stderr pipe, line by line, to the sink and the component's log file.

    Lines already in the log format (the child's loguru) pass as they are; anything else (a traceback, a
    library printing on its own) is stamped with the time it was read, `name` and the child's pid.
    Lives as long as the component (across restarts); `attach` takes each new child's pipe.
    """

    def __init__(self, name: str, log_file: RotatingFile, sink: StderrSink) -> None:
        self.name = name  # the component, or `<component>/standby` for a bridge's warm standby
        self.log_file = log_file
        self.sink = sink
        self._fd: int | None = None
        self._pid = 0
        self._partial = b""

    def attach(self, fd: int, pid: int) -> None:
        self.detach()
        os.set_blocking(fd, False)
        self._fd = fd
        self._pid = pid
        asyncio.get_running_loop().add_reader(fd, self._readable)

    def _readable(self) -> None:
        assert self._fd is not None
        try:
            data = os.read(self._fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # EOF: the child and everything it started have closed the pipe
            self.detach()
            return
        self._lines(data)

    def _lines(self, data: bytes) -> None:
        *complete, self._partial = (self._partial + data).split(b"\n")
        if len(self._partial) > READ_CHUNK:  # a child writing without newlines: pass it on in pieces
            complete.append(self._partial)
            self._partial = b""
        if complete:
            data = b"".join(self._stamped(line) + b"\n" for line in complete)
            self.log_file.write(data)
            self.sink.write(data)

    def _stamped(self, line: bytes) -> bytes:
        text = line.decode("utf-8", "replace")
        return line if logs.is_stamped(text) else logs.stamp(self.name, self._pid, text).encode("utf-8")

    def detach(self) -> None:
        """Stop reading this pipe, after passing on what is already in it (a crashed child's last words)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        asyncio.get_running_loop().remove_reader(fd)
        while True:
            try:
                data = os.read(fd, READ_CHUNK)
            except OSError:  # BlockingIOError: nothing more for now; the old child is gone anyway
                break
            if not data:
                break
            self._lines(data)
        os.close(fd)
        if self._partial:
            self._lines(b"\n")

    def close(self) -> None:
        self.detach()
        self.log_file.close()
