"""The data directory: there and writable before a process starts, or one line naming it (exit 2).

Why a check of its own: the processes create files under it at many places
(session lock, stores, logs, endpoints); without this a read-only or missing
directory surfaces as an OSError traceback from whichever comes first. Only
os calls here: every child pays for this module's imports on every restart.
"""
from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path

from watchdog.shared.exitcodes import EXIT_CONFIG


class DataDirError(Exception):
    """The data directory cannot be used; the message names it and says what to do."""

    exit_code = EXIT_CONFIG


def _user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid {os.getuid()}"


def _group() -> str:
    try:
        return grp.getgrgid(os.getgid()).gr_name
    except KeyError:
        return str(os.getgid())


def ensure_writable(path: Path) -> None:
    """Create `path` if missing (like systemd's StateDirectory=), then prove this user can create files in it."""
    try:
        path.mkdir(mode=0o750, parents=True, exist_ok=True)
    except FileExistsError:
        raise DataDirError(f"data directory {path} exists and is not a directory") from None
    except OSError as exc:
        hint = (f"; create it first (as root): install -d -o {_user()} -g {_group()} -m 0750 {path}"
                if isinstance(exc, PermissionError) else "")
        raise DataDirError(f"data directory {path} does not exist and cannot be created: "
                           f"{exc.strerror or exc}{hint}") from None
    try:
        prove_writable(path)
    except OSError as exc:
        raise DataDirError(f"data directory {path} is not writable by {_user()}: {exc.strerror or exc}") from None


def prove_writable(path: Path) -> None:
    """Create and remove a file in `path` as this user (os.access cannot see a read-only mount); OSError if not."""
    probe = path / f".write-test.{os.getpid()}"
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    os.unlink(probe)
