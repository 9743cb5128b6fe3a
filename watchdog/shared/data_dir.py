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


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _user() -> str:
    return user_name(os.getuid())


def _group() -> str:
    try:
        return grp.getgrgid(os.getgid()).gr_name
    except KeyError:
        return str(os.getgid())


def ensure_writable(path: Path) -> None:
    """Create `path` if missing (like systemd's StateDirectory=), then prove this user can create files in it.

    Root refuses a data directory another user owns: what it would create there (a session lock, a store)
    would be root's, and the service user could not open it afterwards."""
    if os.geteuid() == 0 and (uid := _owner(path)) not in (None, 0):
        owner = user_name(uid)
        raise DataDirError(f"data_dir {path} belongs to {owner}, not root: run this as that user "
                           f"(sudo -u {owner} wa-watchdog ...) so that what it creates is the service's")
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


def _owner(path: Path) -> int | None:
    """The owner of an existing `path`, None if it does not exist."""
    try:
        return path.stat().st_uid
    except OSError:
        return None


def not_usable(what: str, path: Path, exc: OSError) -> DataDirError:
    """A directory under the data directory this user cannot use, e.g. one a root `check` of an older release
    made: one line naming it and the fix."""
    where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
    return DataDirError(f"{what} {path} cannot be used by {_user()}: {exc.strerror or exc}{where}; it must belong "
                        f"to the user the service runs as (as root: chown -R {_user()}: {path})")


def prove_writable(path: Path) -> None:
    """Create and remove a file in `path` as this user (os.access cannot see a read-only mount); OSError if not."""
    probe = path / f".write-test.{os.getpid()}"
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    os.unlink(probe)
