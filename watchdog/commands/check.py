"""`wa-watchdog check --config ...`: is this installation ready to run? One line per check, exit 1 on a failure.

What a stranger setting up a host needs confirmed before `systemctl start`:
the config loads (the CLI already refused it with exit 2 otherwise) and holds
no placeholder, the data directory is there and writable by this user, every
fixed port is free (or held by the running watchdog itself), what the product's
slices check (bridge/check.py: their files are the data directory owner's,
media_dirs exist, every neonize account is paired, its groups are joined), and
the systemd unit is installed and points at this config.
Warnings (`warn`) are advice (file modes, ffmpeg, no unit); only `FAIL`
changes the exit code. A check writes nothing: not the data directory, not a
session store, not a lock (it must be safe to run as root before anything exists).
"""
from __future__ import annotations

import argparse
import errno
import fcntl
import os
import socket
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from watchdog.shared.data_dir import user_name
from watchdog.shared import endpoints
from watchdog.components import Config
from watchdog.shared.component import FAIL, OK, WARN, Finding
from watchdog.shared.config import readable_secrets
from watchdog.shared.config_secrets import placeholders
from watchdog.shared.exitcodes import EXIT_ERROR, EXIT_OK
from watchdog.core.watchdog_lock import WATCHDOG_LOCK

UNIT_DIR = Path("/etc/systemd/system")
UNIT = "wa-watchdog.service"


def watchdog_running(config: Config) -> bool:
    """A watchdog holds the data directory's lock (never created here: a check changes nothing)."""
    try:
        fd = os.open(endpoints.run_dir(config.data_dir) / WATCHDOG_LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def check_config(config: Config) -> Iterator[Finding]:
    held = [count for part in config.slices for count in part.counts(config)]
    yield Finding(OK, "config", f"{config.path}: valid ({', '.join([*held, f'data_dir {config.data_dir}'])})")
    readable = readable_secrets(config)
    if readable:
        yield Finding(WARN, "config", readable)
    for placeholder in placeholders(config):
        yield Finding(FAIL, "config", f"{placeholder} is the example's placeholder: nothing would arrive there; "
                                      "set the real URL")


def _not_writable(path: Path) -> str:
    """Why this user cannot create files in `path` ('' = it can), found without writing (a check changes
    nothing): a read-only mount, or the permission bits."""
    if os.statvfs(path).f_flag & os.ST_RDONLY:
        return "Read-only file system"
    return "" if os.access(path, os.W_OK | os.X_OK, effective_ids=True) else "Permission denied"


def check_data_dir(config: Config) -> Iterator[Finding]:
    path = config.data_dir
    if not path.is_dir():
        yield Finding(FAIL, "data dir",
                      f"{path} does not exist: install -d -o wa-watchdog -g wa-watchdog -m 0750 {path}")
        return
    problem = _not_writable(path)
    if problem:
        yield Finding(FAIL, "data dir", f"{path} is not writable by this user: {problem} (run the check as the "
                                        "service user: sudo -u wa-watchdog wa-watchdog check ...)")
        return
    info = path.stat()
    mode = stat.S_IMODE(info.st_mode)
    if mode & stat.S_IRWXO:
        yield Finding(WARN, "data dir", f"{path} is open to every user (mode {mode:04o}) and holds WhatsApp messages: "
                                        f"chmod 0750 {path}")
    else:
        yield Finding(OK, "data dir", f"{path}: writable, mode {mode:04o}, owner {user_name(info.st_uid)}")


def fixed_ports(config: Config) -> list[tuple[str, str, int]]:
    """(key, host, port) of every listener with a fixed port (0 = any free port, nothing to check): the
    watchdog's own and the ones each config slice declares."""
    ports = [("watchdog.control_port", config.watchdog.control_host, config.watchdog.control_port)]
    ports += [port for part in config.slices for port in part.ports(config)]
    return [(key, host, port) for key, host, port in ports if port]


def check_ports(config: Config) -> Iterator[Finding]:
    running = None
    for key, host, port in fixed_ports(config):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds: TIME_WAIT is no conflict
            try:
                probe.bind((host, port))
                yield Finding(OK, "port", f"{host}:{port} ({key}) is free")
                continue
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    yield Finding(FAIL, "port", f"{host}:{port} ({key}) cannot be bound: {os.strerror(exc.errno or 0)}")
                    continue
        running = watchdog_running(config) if running is None else running
        if running:
            yield Finding(OK, "port", f"{host}:{port} ({key}) is in use: the running wa-watchdog holds this data "
                                      "directory")
        else:
            yield Finding(FAIL, "port", f"{host}:{port} ({key}) is in use by another program (ss -ltnp "
                                        f"'sport = :{port}' names it): change {key} or stop that program")


def check_unit(config: Config, unit_dir: Path) -> Iterator[Finding]:
    unit = unit_dir / UNIT
    if not unit.is_file():
        yield Finding(WARN, "unit", f"{unit} is not installed (fine under supervisord or by hand; for systemd: "
                                    f"cp conf/systemd/{UNIT} {unit_dir}/ && systemctl daemon-reload)")
        return
    exec_start = next((line for line in unit.read_text(encoding="utf-8").splitlines()
                       if line.startswith("ExecStart=")), "")
    if str(config.path) not in exec_start.split():
        yield Finding(FAIL, "unit", f"{unit} starts {exec_start.removeprefix('ExecStart=') or 'nothing'}, "
                                    f"not with --config {config.path}")
        return
    yield Finding(OK, "unit", f"{unit}: ExecStart uses {config.path}")


def check_runtime() -> Iterator[Finding]:
    if sys.version_info < (3, 11):
        yield Finding(FAIL, "python", f"{sys.version.split()[0]} is too old: 3.11 or newer (docs/OPERATIONS.md)")
    else:
        yield Finding(OK, "python", sys.version.split()[0])


def findings(config: Config, unit_dir: Path = UNIT_DIR) -> list[Finding]:
    """Every check in order; one that cannot even look (a directory this user may not enter) is a FAIL naming
    the path, and the others still run."""
    from watchdog import components  # the slices' own checks: media dirs, sessions, groups, ffmpeg ...
    checks: list[tuple[str, Callable[[], Iterable[Finding]]]] = [
        ("config", lambda: check_config(config)), ("data dir", lambda: check_data_dir(config)),
        ("port", lambda: check_ports(config)), *components.checks(config),
        ("unit", lambda: check_unit(config, unit_dir)), ("python", check_runtime)]
    found: list[Finding] = []
    for what, check in checks:
        try:
            for finding in check():
                found.append(finding)
        except OSError as exc:
            found.append(Finding(FAIL, what, f"cannot look at {exc.filename or 'it'}: {exc.strerror or exc}"))
    return found


def cmd_check(config: Config, args: argparse.Namespace) -> int:
    found = findings(config, Path(args.unit_dir))
    for finding in found:
        print(finding.line())
    failed = [f for f in found if f.level == FAIL]
    print(f"{len(failed)} problem(s)" if failed else "ready")
    return EXIT_ERROR if failed else EXIT_OK
