"""The bridge's tables read and checked (`[accounts.NAME]`, `[sim]`), and its slice of the config (`SLICE`).

Each check raises ConfigError naming the key (`accounts.main.api_port: ...`); the generic checks (ports,
tokens, origins, supervision knobs) are the shared ConfigChecks'.
"""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from bridge.config import (GROUP_JID, MIN_TRAFFIC_INTERVAL, PHONE, AccountConfig, BridgeTables, ProbeConfig,
                           SimConfig)
from bridge import transports
from watchdog.shared import alert_rules
from watchdog.shared.config_checks import ConfigChecks
from watchdog.shared.config_model import NAME, ConfigSlice, is_postgres_url
from watchdog.shared.config_secrets import has_password


alert_rules.load("bridge.alert_rules")  # the bridge's rules: [[alerts]] rules are checked against them


def read(checks: ConfigChecks, raw: dict, data_dir: Path) -> dict[str, object]:
    """`[sim]` and `[accounts.NAME]`, each checked; at least one account."""
    sim = checks.table(SimConfig, raw["sim"], "sim") if "sim" in raw else None
    accounts_raw = raw.get("accounts")
    if not isinstance(accounts_raw, dict) or not accounts_raw:
        raise checks.error("accounts", "missing required value: at least one [accounts.NAME] table")
    accounts = {
        name: checks.table(AccountConfig, {"name": name, **checks.as_table(body, f"accounts.{name}")}, f"accounts.{name}")
        for name, body in accounts_raw.items()
    }
    accounts = {name: check_account(checks, account, data_dir, sim) for name, account in accounts.items()}
    if sim is not None:
        check_sim(checks, sim)
    check_unique(checks, accounts)
    return {"sim": sim, "accounts": accounts}


def check_account(checks: ConfigChecks, account: AccountConfig, data_dir: Path, sim: SimConfig | None) -> AccountConfig:
    """One account checked, its paths resolved in data_dir (`follow_groups` stays as given: its default is
    the projects' groups, filled in by the projects' checks)."""
    key = f"accounts.{account.name}"
    if account.transport not in transports.NAMES:
        raise checks.error(f"{key}.transport",
                           f"must be {' or '.join(map(repr, transports.NAMES))}, got {account.transport!r}")
    transports.kind(account.transport).check_account(account, checks.error)  # its own settings (session_db)
    if account.transport == "sim" and sim is None:
        raise checks.error(f"{key}.transport", "'sim' needs a [sim] table")
    if not PHONE.match(account.phone):
        raise checks.error(f"{key}.phone", f"expected digits only with country code (e.g. 27710000000), got {account.phone!r}")
    checks.check_port(account.api_port, f"{key}.api_port")
    checks.check_supervision(account.watchdog_sec, account.rss_limit_mb, key)
    check_probe(checks, account.probe, f"{key}.probe")
    checks.check_token(account.api_token, f"{key}.api_token", "api_host", account.api_host)
    checks.check_origins(account.api_allowed_origins, f"{key}.api_allowed_origins")
    for media_type in ("image", "video", "audio", "document"):
        checks.check_positive(getattr(account.media_max_mb, media_type), f"{key}.media_max_mb.{media_type}")
    checks.check_positive(account.send_max_attempts, f"{key}.send_max_attempts")
    checks.check_positive(account.send_pause_s, f"{key}.send_pause_s")
    for name in ("send_wait_s", "dedupe_window_s"):
        if getattr(account, name) < 0:
            raise checks.error(f"{key}.{name}", f"must be 0 (off) or more seconds, got {getattr(account, name):g}")
    check_pace(checks, account, f"{key}.pace")
    for i, jid in enumerate(account.follow_groups):
        if not GROUP_JID.match(jid):
            raise checks.error(f"{key}.follow_groups[{i}]", f"not a group JID (like 120363000000000001@g.us): {jid!r}")
    checks.check_no_repeats(account.follow_groups, f"{key}.follow_groups")
    checks.check_no_repeats(account.media_dirs, f"{key}.media_dirs")
    base = data_dir / "accounts" / account.name
    return replace(
        account,
        store=data_dir / account.store if account.store != Path() else base / "messages.db",
        session_dir=data_dir / account.session_dir if account.session_dir != Path() else base / "session",
        download_dir=data_dir / account.download_dir if account.download_dir != Path() else base / "downloads",
        media_dirs=[data_dir / d for d in account.media_dirs] or [data_dir / "media"],
    )


def check_pace(checks: ConfigChecks, account: AccountConfig, key: str) -> None:
    """Whole numbers of messages, seconds of 0 (off) or more; typing needs a typing speed."""
    pace = account.pace
    for name in ("per_minute", "per_hour", "per_day", "reactions_per_minute"):
        value = getattr(pace, name)
        if value < 0:
            raise checks.error(f"{key}.{name}", f"must be a whole number of messages, 0 (no limit) or more, got {value!r}")
    for name in ("chat_gap_s", "chat_jitter_s", "typing_max_s", "ramp_s"):
        if getattr(pace, name) < 0:
            raise checks.error(f"{key}.{name}", f"must be 0 (off) or more seconds, got {getattr(pace, name):g}")
    if pace.typing:
        checks.check_positive(pace.typing_chars_per_s, f"{key}.typing_chars_per_s")
    if 0 < pace.per_hour < pace.per_minute:
        raise checks.error(f"{key}.per_hour", f"{pace.per_hour} is below per_minute ({pace.per_minute})")
    if 0 < pace.per_day < pace.per_hour:
        raise checks.error(f"{key}.per_day", f"{pace.per_day} is below per_hour ({pace.per_hour})")


def check_probe(checks: ConfigChecks, probe: ProbeConfig, key: str) -> None:
    for name in ("period", "timeout", "failure_threshold"):
        checks.check_positive(getattr(probe, name), f"{key}.{name}")
    if probe.initial_delay < 0:
        raise checks.error(f"{key}.initial_delay", f"must be 0 or more seconds, got {probe.initial_delay:g}")


def check_sim(checks: ConfigChecks, sim: SimConfig) -> None:
    checks.check_port(sim.port, "sim.port")
    checks.check_supervision(sim.watchdog_sec, sim.rss_limit_mb, "sim")
    if sim.disconnect_every and (len(sim.disconnect_every) != 2 or not 0 < sim.disconnect_every[0] <= sim.disconnect_every[1]):
        raise checks.error("sim.disconnect_every", "expected [min_seconds, max_seconds] with 0 < min <= max, or []")
    if sim.url and not re.match(r"^http://[^/\s:]+:[0-9]+/?$", sim.url):
        raise checks.error("sim.url", f"expected http://HOST:PORT of a running simulator, got {sim.url!r}")
    for i, group in enumerate(sim.groups):
        if not GROUP_JID.match(group.jid):
            raise checks.error(f"sim.groups[{i}].jid", f"not a group JID: {group.jid!r}")
        if not group.name.strip():
            raise checks.error(f"sim.groups[{i}].name", "must not be empty")
        for j, phone in enumerate(group.participants):
            if not PHONE.match(phone):
                raise checks.error(f"sim.groups[{i}].participants[{j}]",
                                   f"expected digits only with country code (e.g. 27710000001), got {phone!r}")
        checks.check_no_repeats(group.participants, f"sim.groups[{i}].participants")
    checks.check_no_repeats([g.jid for g in sim.groups], "sim.groups", what="jid")
    if sim.traffic.interval < MIN_TRAFFIC_INTERVAL:
        raise checks.error("sim.traffic.interval",
                           f"must be at least {MIN_TRAFFIC_INTERVAL:g} seconds, got {sim.traffic.interval:g}")


def check_unique(checks: ConfigChecks, accounts: dict[str, AccountConfig]) -> None:
    """Names become component names (`bridge:main`); one number has one session."""
    for name in accounts:
        if not NAME.match(name):
            raise checks.error(f"accounts.{name}", "name must be letters, digits, '.', '_' or '-' (at most 64), "
                                                   "starting with a letter or digit")
    phones: dict[str, str] = {}
    for account in accounts.values():
        if account.phone in phones:
            raise checks.error(f"accounts.{account.name}.phone", f"{account.phone} is also accounts.{phones[account.phone]}"
                                                                 ".phone: one number has one session")
        phones[account.phone] = account.name


def ports(config: BridgeTables) -> list[tuple[str, str, int]]:
    sim = config.sim
    found = [("sim.port", "127.0.0.1", sim.port)] if sim is not None and sim.enabled else []  # disabled: no listener
    return found + [(f"accounts.{a.name}.api_port", a.api_host, a.api_port) for a in config.accounts.values()]


def secret_keys(config: BridgeTables) -> list[str]:
    found = [f"accounts.{a.name}.api_token" for a in config.accounts.values() if a.api_token]
    return found + [f"accounts.{a.name}.session_db" for a in config.accounts.values() if has_password(a.session_db)]


def urls(config: BridgeTables) -> list[tuple[str, str]]:
    return [(f"accounts.{a.name}.session_db", a.session_db) for a in config.accounts.values()
            if is_postgres_url(a.session_db)]


def counts(config: BridgeTables) -> list[str]:
    return [f"{len(config.accounts)} account(s)"]


SLICE = ConfigSlice(BridgeTables, read, ports=ports, secret_keys=secret_keys, urls=urls, counts=counts)
