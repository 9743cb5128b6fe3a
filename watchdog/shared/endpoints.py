"""Published endpoints: where each running component can be reached.

Ports may be 0 (any free port), so each component writes the URLs it actually
bound to `<data_dir>/run/<component>.json`; other commands and tests read them
from there instead of guessing.

A component probed over HTTP (the bridge) also serves its API on a unix socket
at a path known without any file: `health_socket`. Only the service user can
reach it (run/ is 0700, the socket 0600), so the watchdog's health probe never
competes with the public API for its connection slots, and it finds the
component even while the disk is too full to publish the JSON record.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from watchdog.shared import file_modes
from watchdog.shared import clock


UNIX_PATH_MAX = 107  # bytes of a unix socket's path (sun_path, less its terminating NUL)


def run_dir(data_dir: Path) -> Path:
    """`<data>/run`: endpoints, locks and the control token, 0700 (only the service user may open a lock)."""
    return data_dir / "run"


def file_name(component: str, suffix: str) -> str:
    """A component's files are named after it, `:` made `-` (`bridge:main` -> `bridge-main.json`)."""
    return component.replace(":", "-") + suffix


def _file(data_dir: Path, component: str) -> Path:
    return run_dir(data_dir) / file_name(component, ".json")


def publish(data_dir: Path, component: str, endpoints: dict[str, str]) -> None:
    """Atomically write this process's endpoints (replace, so readers never see half a file)."""
    path = _file(data_dir, component)
    file_modes.ensure_dir(path.parent, file_modes.PRIVATE_DIR)
    record = {"component": component, "pid": os.getpid(), "endpoints": endpoints,
              "started_at": clock.now().isoformat()}
    file_modes.write_atomic(path, json.dumps(record))


def health_socket(data_dir: Path, component: str) -> Path | None:
    """`<data>/run/<component>.sock`, or None where that path is too long for a unix socket (the watchdog then
    probes the published API)."""
    path = (run_dir(data_dir) / file_name(component, ".sock")).absolute()
    return path if len(os.fsencode(path)) <= UNIX_PATH_MAX else None


def read(data_dir: Path, component: str) -> dict | None:
    """The published record of a component, or None if it has published nothing."""
    try:
        return json.loads(_file(data_dir, component).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def url(data_dir: Path, component: str, name: str = "api") -> str | None:
    record = read(data_dir, component)
    return record["endpoints"].get(name) if record else None


def wait_url(data_dir: Path, component: str, name: str = "api", timeout: float = 10.0,
             newer_than_pid: int | None = None) -> str:
    """Block until a component has published endpoint `name` (optionally from a pid other than the given one)."""
    deadline = time.monotonic() + timeout
    while True:
        record = read(data_dir, component)
        if record and name in record["endpoints"] and record["pid"] != newer_than_pid:
            return record["endpoints"][name]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{component} published no {name!r} endpoint within {timeout}s")
        time.sleep(0.02)


def remove(data_dir: Path, component: str) -> None:
    """What a component published, on its way out: its record and its health socket."""
    _file(data_dir, component).unlink(missing_ok=True)
    socket = health_socket(data_dir, component)
    if socket is not None:
        socket.unlink(missing_ok=True)
