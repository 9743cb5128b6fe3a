"""The sd_notify protocol, receiving side: one abstract datagram socket per component.

A child gets `NOTIFY_SOCKET=@wa-watchdog/<watchdog pid>/<component>` and speaks
to it exactly as it would to systemd. The kernel attaches the sender's pid to
each datagram (SO_PASSCRED), so a message from anything but the current child
(a previous instance still dying) can be told apart.
"""
from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

MAX_DATAGRAM = 4096
_UCRED = struct.Struct("iII")  # pid, uid, gid


@dataclass(frozen=True)
class Notification:
    """One datagram's assignments; `sender` is the sending pid (None if the kernel gave none)."""

    sender: int | None
    ready: bool = False
    watchdog: bool = False
    stopping: bool = False
    status: str | None = None

    def sent_by(self, pid: int) -> bool:
        """From process `pid`, or from something it started in its process group (not a previous instance)."""
        if self.sender is None or self.sender == pid:
            return True
        try:
            return os.getpgid(self.sender) == pid
        except OSError:
            return False


def parse(data: bytes, sender: int | None = None) -> Notification:
    """Parse newline-separated KEY=VALUE assignments; unknown keys are ignored as systemd does."""
    fields: dict[str, str] = {}
    for line in data.decode("utf-8", "replace").split("\n"):
        key, sep, value = line.partition("=")
        if sep:
            fields[key] = value
    return Notification(sender=sender, ready=fields.get("READY") == "1", watchdog=fields.get("WATCHDOG") == "1",
                        stopping=fields.get("STOPPING") == "1", status=fields.get("STATUS"))


def socket_address(component: str) -> str:
    """The NOTIFY_SOCKET value a child of this watchdog gets ('@' = Linux abstract namespace)."""
    return f"@wa-watchdog/{os.getpid()}/{component}"


class NotifyServer:
    """Receives one component's notifications and hands each to `on_message` from the event loop."""

    def __init__(self, component: str, on_message: Callable[[Notification], None]) -> None:
        self.address = socket_address(component)
        self._on_message = on_message
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._socket.bind("\0" + self.address[1:])
        asyncio.get_running_loop().add_reader(self._socket.fileno(), self._readable)

    def _readable(self) -> None:
        while True:
            try:
                data, ancillary, _, _ = self._socket.recvmsg(MAX_DATAGRAM, socket.CMSG_SPACE(_UCRED.size))
            except (BlockingIOError, InterruptedError):
                return
            sender = None
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(payload) >= _UCRED.size:
                    sender = _UCRED.unpack_from(payload)[0]
            self._on_message(parse(data, sender))

    def close(self) -> None:
        if self._socket.fileno() >= 0:
            asyncio.get_running_loop().remove_reader(self._socket.fileno())
            self._socket.close()
