"""The sd_notify protocol, child side: READY=1, WATCHDOG=1, STATUS=, STOPPING=1.

Every wa-watchdog process speaks it to whatever NOTIFY_SOCKET it was given:
systemd when run as a unit, our watchdog when supervised by it. Without
NOTIFY_SOCKET every call is silent.

The `sdnotify` package connects the socket (including abstract `@` names),
but encodes with Latin-1 and silently drops a message it cannot encode; a
status line like `monitors 6/6 ready · 2 restarts` would vanish. We send
UTF-8 bytes ourselves, as systemd expects.
"""
from __future__ import annotations

import os

import sdnotify


def heartbeat_interval(watchdog_sec: float) -> float:
    """How often to send WATCHDOG=1: half of WATCHDOG_USEC when a supervisor set it, else half of watchdog_sec."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    return int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else watchdog_sec / 2


class Notifier:
    def __init__(self) -> None:
        self._socket = sdnotify.SystemdNotifier().socket if os.environ.get("NOTIFY_SOCKET") else None
        self._status = ""

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def send(self, *assignments: str) -> None:
        if self._socket is None:
            return
        text = "\n".join(a.replace("\n", " ") if a.startswith("STATUS=") else a for a in assignments)
        try:
            self._socket.sendall(text.encode("utf-8"))
        except OSError:
            pass  # the receiver is gone (watchdog restarting); the next heartbeat will tell

    def ready(self, status: str | None = None) -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def heartbeat(self) -> None:
        self.send("WATCHDOG=1")

    def status(self, text: str) -> None:
        """Send STATUS= when it changed: callers may call this every tick."""
        if text != self._status:
            self._status = text
            self.send(f"STATUS={text}")

    def stopping(self) -> None:
        self.send("STOPPING=1")
