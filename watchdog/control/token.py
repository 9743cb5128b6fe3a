"""The control API's restart token: `<data>/run/control.token`, 0600, new at every watchdog start.

Why: the control API listens on 127.0.0.1, which every local user can reach.
A restart changes what runs (a bridge started with a config someone edited),
so `POST /restart/...` needs a bearer token even on loopback. The watchdog
writes a fresh random token where only the service user (and root) can read
it, and `wa-watchdog restart` reads it from there, so operators never handle it.
`watchdog.control_token`, when configured, is accepted too (and guards every route).
"""
from __future__ import annotations

import secrets
from pathlib import Path

from watchdog.shared import endpoints, file_modes

TOKEN_FILE = "control.token"


def path(data_dir: Path) -> Path:
    return endpoints.run_dir(data_dir) / TOKEN_FILE


def generate(data_dir: Path) -> str:
    """A new token, written 0600 into the 0700 run directory before the control API starts."""
    token = secrets.token_urlsafe(32)
    file_modes.ensure_dir(endpoints.run_dir(data_dir), file_modes.PRIVATE_DIR)
    file_modes.write_atomic(path(data_dir), token + "\n")
    return token


def read(data_dir: Path) -> str:
    """The running watchdog's token; '' if there is none; PermissionError if this user may not read it."""
    try:
        return path(data_dir).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return ""
