"""The exit of a component's process as the watchdog saw it, for the process that comes next.

Why: a process killed with SIGKILL leaves no trace of when it died; its own
last heartbeat may be up to a second old. The watchdog sees the exit on the
pidfd within milliseconds and writes `run/<component>.exit.json`
`{"pid", "exited_at"}` (epoch seconds) before it starts or promotes anything,
so the next bridge opens its crash window there instead of at the heartbeat —
if that pid wrote the last heartbeat (one that died before it ever ran says
nothing about when the outage began). A warm standby already waiting on the
session lock learns the same moment itself: the kernel hands it the lock when
the owner dies, possibly before this file is written.
"""
from __future__ import annotations

import json
from pathlib import Path

from watchdog.shared import endpoints, file_modes


def _file(data_dir: Path, component: str) -> Path:
    return endpoints.run_dir(data_dir) / endpoints.file_name(component, ".exit.json")


def record(data_dir: Path, component: str, pid: int, exited_at: float) -> None:
    """Called on the exit of the component's process (not a standby's), before anything replaces it."""
    try:
        file_modes.write_atomic(_file(data_dir, component), json.dumps({"pid": pid, "exited_at": exited_at}))
    except OSError:  # a full disk: the next process falls back to the heartbeat
        pass


def predecessor_exit(data_dir: Path, component: str) -> tuple[int, float] | None:
    """(pid, epoch seconds) of the component's last exit the watchdog saw, or None."""
    try:
        found = json.loads(_file(data_dir, component).read_text(encoding="utf-8"))
        return int(found["pid"]), float(found["exited_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
