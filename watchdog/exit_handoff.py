"""The exit time of a component's previous process, handed to the next one (`WA_WATCHDOG_EXITED_AT`).

Why: a process killed with SIGKILL leaves no trace of when it died; its own
last heartbeat may be up to a second old. The watchdog sees the exit on the
pidfd within milliseconds, so it passes that time (epoch seconds) to the
process it starts next, and the bridge opens its crash window there instead
of at the heartbeat. (A warm standby learns the same moment itself: the
kernel hands it the session lock when the owner dies.)
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the bridge reads the variable without importing the watchdog's process code
    from watchdog.child import ChildProcess

ENV = "WA_WATCHDOG_EXITED_AT"


def env(previous: ChildProcess | None) -> dict[str, str]:
    """{ENV: exit time} if `previous` (the component's last process) has exited, else {}."""
    if previous is None or previous.exited_at is None:
        return {}
    return {ENV: f"{previous.exited_at:.6f}"}


def exited_at(environ: Mapping[str, str] = os.environ) -> float | None:
    """In the child: when its predecessor exited, as the watchdog saw it (None if not told)."""
    try:
        return float(environ[ENV])
    except (KeyError, ValueError):
        return None
