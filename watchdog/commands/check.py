"""`wa-watchdog check --config ...`: is this installation ready to run? One line per check, exit 1 on a failure.

What a stranger setting up a host needs confirmed before `systemctl start`:
the config loads (the CLI already refused it with exit 2 otherwise) and holds
no placeholder, the data directory is there and writable by this user (and
what is in it is the data directory owner's), media_dirs exist, every fixed
port is free (or held by the running watchdog itself), every neonize account
is paired, and the systemd unit is installed and points at this config.
Warnings (`warn`) are advice (file modes, ffmpeg, no unit); only `FAIL`
changes the exit code. A check writes nothing: not the data directory, not a
session store, not a lock (it must be safe to run as root before anything exists).
"""
from __future__ import annotations

import argparse
import errno
import fcntl
import json
import os
import shutil
import socket
import stat
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from bridge.membership import not_in_text

from watchdog.shared.data_dir import user_name
from watchdog.shared import endpoints
from bridge.config import AccountConfig
from watchdog.components import Config
from watchdog.shared.config import readable_secrets
from watchdog.shared.config_secrets import placeholders
from watchdog.shared.exitcodes import EXIT_ERROR, EXIT_OK
from watchdog.core.watchdog_lock import WATCHDOG_LOCK

OK, WARN, FAIL = "ok", "warn", "FAIL"
UNIT_DIR = Path("/etc/systemd/system")
UNIT = "wa-watchdog.service"
HEALTH_TIMEOUT = 3.0  # seconds for a running bridge's health answer


@dataclass(frozen=True)
class Finding:
    level: str  # ok | warn | FAIL
    what: str  # config, data dir, port, session, unit, python, ffmpeg
    text: str

    def line(self) -> str:
        return f"{self.level:<5} {self.what:<9} {self.text}"


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
    yield Finding(OK, "config", f"{config.path}: valid ({len(config.accounts)} account(s), "
                                f"{len(config.projects)} project(s), data_dir {config.data_dir})")
    readable = readable_secrets(config)
    if readable:
        yield Finding(WARN, "config", readable)
    for placeholder in placeholders(config):
        yield Finding(FAIL, "config", f"{placeholder} is the example's placeholder: nothing would arrive there; "
                                      "set the real URL")


def check_media_dirs(config: Config) -> Iterator[Finding]:
    """Files to send are read from media_dirs: a missing or unreadable one is found here, not as a 400 at send
    time. The default (data_dir/media) is only advice: sending files is optional."""
    for account in config.accounts.values():
        default = [config.data_dir / "media"]
        for i, folder in enumerate(account.media_dirs):
            key = f"accounts.{account.name}.media_dirs" + ("" if account.media_dirs == default else f"[{i}]")
            if not folder.is_dir():
                problem = "does not exist" if not folder.exists() else "is not a directory"
                level = WARN if account.media_dirs == default else FAIL
                yield Finding(level, "media", f"{folder} ({key}) {problem}: files to send are read from it "
                                              f"(install -d -o wa-watchdog -g wa-watchdog -m 0750 {folder})")
            elif not os.access(folder, os.R_OK | os.X_OK, effective_ids=True):
                yield Finding(FAIL, "media", f"{folder} ({key}) is not readable by this user")
            else:
                yield Finding(OK, "media", f"{folder} ({key})")


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
    yield from check_owners(config, info.st_uid)


def check_owners(config: Config, owner: int) -> Iterator[Finding]:
    """What the service opens for writing at start belongs to the data directory's owner: one made by another
    user (a root `pair`, an older release's root `check`) stops the service with a permission error."""
    for account in config.accounts.values():
        session = account.session_dir
        paths = [config.data_dir / "accounts", account.store.parent, session, session / "session.lock",
                 session / (account.session_db or "neonize.db"), account.store]
        foreign = [p for p in dict.fromkeys(paths) if p.exists() and p.stat().st_uid != owner]
        if foreign:
            names = ", ".join(f"{p} ({user_name(p.stat().st_uid)})" for p in foreign)
            yield Finding(FAIL, "data dir", f"account {account.name}: {names} not owned by {user_name(owner)}, "
                                            f"who owns the data directory: chown -R {user_name(owner)}: "
                                            f"{config.data_dir / 'accounts'}")


def fixed_ports(config: Config) -> list[tuple[str, str, int]]:
    """(key, host, port) of every listener with a fixed port (0 = any free port, nothing to check)."""
    ports = [("watchdog.control_port", config.watchdog.control_host, config.watchdog.control_port)]
    if config.sim is not None and config.sim.enabled:
        ports.append(("sim.port", "127.0.0.1", config.sim.port))
    ports += [(f"accounts.{a.name}.api_port", a.api_host, a.api_port) for a in config.accounts.values()]
    if config.drops_api.enabled:
        ports.append(("drops_api.port", config.drops_api.host, config.drops_api.port))
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


def check_sessions(config: Config) -> Iterator[Finding]:
    for account in config.accounts.values():
        if account.transport != "neonize":
            yield Finding(OK, "session", f"{account.name}: transport {account.transport!r}, nothing to pair")
            continue
        try:
            from bridge.transports.neonize_transport import SessionStoreError, linked_device, session_database
        except ImportError as exc:
            yield Finding(FAIL, "session", f"{account.name}: neonize is not installed ({exc}): "
                                           "pip install 'wa-watchdog[neonize]'")
            continue
        try:
            device = linked_device(account, read_only=True)
        except SessionStoreError as exc:
            yield Finding(FAIL, "session", f"{account.name}: {exc}")
            continue
        if device is None:
            yield Finding(FAIL, "session", f"{account.name} ({account.phone}) is not paired: wa-watchdog pair "
                                           f"--account {account.name} --phone {account.phone} --config {config.path}")
        else:
            yield Finding(OK, "session", f"{account.name}: paired as {device.User}:{device.Device}@{device.Server} "
                                         f"({session_database(account)})")


def _bridge_health(config: Config, account: AccountConfig) -> dict | None:
    """The running bridge's `GET /api/health` answer (200 or 503 alike), None when no bridge of it runs."""
    record = endpoints.read(config.data_dir, account.component)
    if record is None or "api" not in record.get("endpoints", {}) or not psutil.pid_exists(record["pid"]):
        return None
    request = urllib.request.Request(record["endpoints"]["api"] + "/api/health")
    if account.api_token:
        request.add_header("Authorization", f"Bearer {account.api_token}")
    try:
        with urllib.request.urlopen(request, timeout=HEALTH_TIMEOUT) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read() or b"null")
    return body if isinstance(body, dict) else {}


def check_groups(config: Config) -> Iterator[Finding]:
    """While a bridge runs: every enabled project's groups are among those WhatsApp lists for its account (a
    mistyped JID, or a number removed from a group, would watch nothing and look like a quiet group)."""
    for account in config.accounts.values():
        try:
            health = _bridge_health(config, account)
        except (OSError, ValueError) as exc:
            yield Finding(WARN, "groups", f"account {account.name}: its bridge did not answer ({exc}); "
                                          "group membership not checked")
            continue
        if health is None:
            continue  # not running: nothing to ask WhatsApp through
        groups = health.get("groups")
        if not isinstance(groups, list):
            yield Finding(WARN, "groups", f"account {account.name}: WhatsApp has not listed its groups yet (bridge "
                                          f"{health.get('state', '?')}); check again once it is connected")
            continue
        followed = [(group, project.name) for project in config.projects
                    if project.enabled and project.listen_account == account.name for group in project.groups]
        missing = [(group, name) for group, name in followed if group not in groups]
        for group, name in missing:
            yield Finding(FAIL, "groups", f"{not_in_text(account.name, group, [name])}: nothing from it is recorded")
        if not missing:
            yield Finding(OK, "groups", f"account {account.name} is in every followed group ({len(followed)})")


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
    if shutil.which("ffmpeg") is None:
        yield Finding(WARN, "ffmpeg", "not on PATH: neonize needs it to convert voice notes and video "
                                      "(apt-get install ffmpeg)")


def findings(config: Config, unit_dir: Path = UNIT_DIR) -> list[Finding]:
    """Every check in order; one that cannot even look (a directory this user may not enter) is a FAIL naming
    the path, and the others still run."""
    checks: list[tuple[str, Callable[[], Iterator[Finding]]]] = [
        ("config", lambda: check_config(config)), ("data dir", lambda: check_data_dir(config)),
        ("media", lambda: check_media_dirs(config)), ("port", lambda: check_ports(config)),
        ("session", lambda: check_sessions(config)), ("groups", lambda: check_groups(config)),
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
