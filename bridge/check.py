"""The bridge's lines in `wa-watchdog check` (watchdog/commands/check.py runs them): what its accounts' files,
folders, sessions and groups need before `systemctl start`. A check writes nothing, as the whole command."""
from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator

import psutil

from bridge.transports import kind
from watchdog.shared import endpoints
from watchdog.shared.component import FAIL, OK, WARN, Finding
from bridge.config import AccountConfig
from watchdog.components import Config
from watchdog.shared.data_dir import user_name
from bridge.alert_rules import not_in_text

HEALTH_TIMEOUT = 3.0  # seconds for a running bridge's health answer


def findings(config: Config) -> list[tuple[str, Callable[[], Iterable[Finding]]]]:
    """The named checks, in the order they are printed (watchdog/shared/component.py)."""
    return [("data dir", lambda: check_owners(config)), ("media", lambda: check_media_dirs(config)),
            ("session", lambda: check_sessions(config)), ("groups", lambda: check_groups(config)),
            ("ffmpeg", check_ffmpeg)]


def check_owners(config: Config) -> Iterator[Finding]:
    """What the service opens for writing at start belongs to the data directory's owner: one made by another
    user (a root `pair`, an older release's root `check`) stops the service with a permission error."""
    if not config.data_dir.is_dir():
        return  # the data directory's own line says so
    owner = config.data_dir.stat().st_uid
    for account in config.accounts.values():
        session = account.session_dir
        paths = [config.data_dir / "accounts", account.store.parent, session, session / "session.lock",
                 *kind(account.transport).session_files(account), account.store]
        foreign = [p for p in dict.fromkeys(paths) if p.exists() and p.stat().st_uid != owner]
        if foreign:
            names = ", ".join(f"{p} ({user_name(p.stat().st_uid)})" for p in foreign)
            yield Finding(FAIL, "data dir", f"account {account.name}: {names} not owned by {user_name(owner)}, "
                                            f"who owns the data directory: chown -R {user_name(owner)}: "
                                            f"{config.data_dir / 'accounts'}")


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


def check_sessions(config: Config) -> Iterator[Finding]:
    """Each account's transport says whether its session is ready (neonize: paired)."""
    for account in config.accounts.values():
        yield from kind(account.transport).findings(config, account)


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
        # A number that sends a project's feedback (a second one too: send_accounts) must be in its groups.
        sends_to = [(group, project.name) for project in config.projects if project.enabled
                    and project.listen_account != account.name and account.name in project.send_accounts
                    for group in project.groups]
        for group, name in sends_to:
            if group not in groups:
                missing.append((group, name))
                yield Finding(FAIL, "groups", f"{not_in_text(account.name, group, [name])}: its feedback cannot "
                                              "be sent through this number")
        followed += sends_to
        if not missing:
            yield Finding(OK, "groups", f"account {account.name} is in every followed group ({len(followed)})")


def check_ffmpeg() -> Iterator[Finding]:
    if shutil.which("ffmpeg") is None:
        yield Finding(WARN, "ffmpeg", "not on PATH: neonize needs it to convert voice notes and video "
                                      "(apt-get install ffmpeg)")
