"""The sd_notify protocol, child side: READY=1, WATCHDOG=1, STATUS=, STOPPING=1.

Every wa-watchdog process speaks it to whatever NOTIFY_SOCKET it was given:
systemd when run as a unit, our watchdog when supervised by it. Without
NOTIFY_SOCKET every call is silent.

The `sdnotify` package connects the socket (including abstract `@` names),
but encodes with Latin-1 and silently drops a message it cannot encode; a
status line like `monitors 6/6 ready · 2 restarts` would vanish. We send
UTF-8 bytes ourselves, as systemd expects.

A send never waits (MSG_DONTWAIT, as systemd's own sd_notify): the receiver's
queue holds only a few datagrams (net.unix.max_dgram_qlen, 10 by default), and
a supervisor that stops reading (paused with SIGSTOP, a frozen VM) would
otherwise stop the sender's event loop, and with it the data path. A datagram
that does not fit is dropped and counted; what must arrive is sent again:
READY=1 with the next heartbeat, a STATUS= line at the next call.
"""
from __future__ import annotations

import os
import socket

import sdnotify
from loguru import logger


def heartbeat_interval(watchdog_sec: float) -> float:
    """How often to send WATCHDOG=1: half of WATCHDOG_USEC when a supervisor set it, else half of watchdog_sec."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    return int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else watchdog_sec / 2


class Notifier:
    def __init__(self) -> None:
        self._socket = sdnotify.SystemdNotifier().socket if os.environ.get("NOTIFY_SOCKET") else None
        self._status = ""
        self._ready_owed = False  # READY=1 was dropped: it goes with the next heartbeat
        self.dropped = 0  # datagrams the receiver had no room for, since the last one it took

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def send(self, *assignments: str) -> bool:
        """One datagram, without waiting; True if the receiver took it."""
        if self._socket is None:
            return False
        text = "\n".join(a.replace("\n", " ") if a.startswith("STATUS=") else a for a in assignments)
        try:
            self._socket.send(text.encode("utf-8"), socket.MSG_DONTWAIT)
        except BlockingIOError:  # the receiver's queue is full: it is not reading (paused, or busy)
            self.dropped += 1
            return False
        except OSError:
            return False  # the receiver is gone (watchdog restarting); the next heartbeat will tell
        if self.dropped:
            logger.warning("{} sd_notify messages dropped while the supervisor was not reading them", self.dropped)
            self.dropped = 0
        return True

    def ready(self, status: str | None = None) -> None:
        self._ready_owed = not self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def heartbeat(self) -> None:
        if self.send("WATCHDOG=1", *(["READY=1"] if self._ready_owed else [])):
            self._ready_owed = False

    def status(self, text: str) -> None:
        """Send STATUS= when it changed (and was not yet taken): callers may call this every tick."""
        if text != self._status and self.send(f"STATUS={text}"):
            self._status = text

    def stopping(self) -> None:
        self.send("STOPPING=1")
