"""The drops domain's tables read and checked, and its slice of the config (`SLICE`).

Each check raises ConfigError naming the key (`projects[lawley].pattern: ...`); the generic checks (ports,
tokens, origins, supervision knobs) are the shared ConfigChecks'. A project names accounts, so what spans
the two (its listen and send accounts, the groups an account follows by default) is checked in `check`,
once the bridge's tables are read.
"""
from __future__ import annotations

import base64
import re
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bridge.config import GROUP_JID, AccountConfig
from monitors.config import (ACK_MODES, AUTO, DB_SCHEMA_NAME, WEBHOOK_NAME, WEBHOOK_STARTS, DatabaseConfig, DropsApiConfig,
                             DropsTables, MonitorsConfig, ProjectConfig, WebhookConfig, webhook_name)
from monitors.cluster_config import read_cluster
from monitors.events import WEBHOOK_EVENTS
from watchdog.shared import alert_rules
from watchdog.shared.config_checks import ConfigChecks
from watchdog.shared.config_model import NAME, ConfigSlice, is_postgres_url
from watchdog.shared.config_secrets import has_password, placeholder_url

alert_rules.load("monitors.alert_rules")  # the drops' rules: [[alerts]] rules are checked against them


def project_key(i: int, name: object) -> str:
    """How config errors name a project: by its name (`projects[lawley]`), by position only while it has none."""
    return f"projects[{name}]" if isinstance(name, str) and name else f"projects[{i}]"


def read(checks: ConfigChecks, raw: dict, data_dir: Path) -> dict[str, object]:
    """`[[projects]]`, `[database]`, `[drops_api]` with `[[webhooks]]`, `[monitors]`, `[cluster]`, each checked."""
    projects_raw = raw.get("projects", [])
    if not isinstance(projects_raw, list):
        raise checks.error("projects", "expected an array of tables ([[projects]])")
    projects = [checks.table(ProjectConfig, body, project_key(i, body.get("name") if isinstance(body, dict) else None))
                for i, body in enumerate(projects_raw)]
    for i, project in enumerate(projects):
        check_project(checks, project, i)
    check_unique(checks, projects)
    database = check_database(checks, checks.table(DatabaseConfig, raw.get("database", {}), "database"))
    drops_api = checks.table(DropsApiConfig, raw.get("drops_api", {}), "drops_api")
    webhooks = read_webhooks(checks, raw.get("webhooks", []), drops_api)
    monitors = checks.table(MonitorsConfig, raw.get("monitors", {}), "monitors")
    per_process = monitors.projects_per_process
    if per_process != AUTO and (isinstance(per_process, str) or per_process < 1):
        raise checks.error("monitors.projects_per_process", f'must be 1 or more, or "auto"; got {per_process!r}')
    cluster = read_cluster(checks, raw["cluster"], database) if "cluster" in raw else None
    return {"projects": projects, "database": database, "drops_api": drops_api, "webhooks": webhooks,
            "monitors": monitors, "cluster": cluster}


MAX_COALESCE_S = 60.0  # the target: no drop waits more than a minute for its acknowledgement


def check_project(checks: ConfigChecks, project: ProjectConfig, i: int) -> None:
    key = project_key(i, project.name)
    checks.check_supervision(project.watchdog_sec, project.rss_limit_mb, key)
    if project.environment not in ("prod", "dev"):
        raise checks.error(f"{key}.environment", f"must be 'prod' or 'dev', got {project.environment!r}")
    if not project.groups:
        raise checks.error(f"{key}.groups", "needs at least one group JID")
    for j, jid in enumerate(project.groups):
        if not GROUP_JID.match(jid):
            raise checks.error(f"{key}.groups[{j}]", f"not a group JID (like 120363000000000001@g.us): {jid!r}")
    checks.check_no_repeats(project.groups, f"{key}.groups")
    try:
        re.compile(project.pattern)
    except re.error as exc:
        raise checks.error(f"{key}.pattern", f"not a valid regular expression: {exc}") from None
    try:
        project.feedback.template.format(number="1", drop="DR1", project="p", group="g")
    except (KeyError, IndexError, ValueError) as exc:
        raise checks.error(f"{key}.feedback.template",
                           f"unknown placeholder {exc}; use {{number}}, {{drop}}, {{project}}, {{group}}") from None
    if project.feedback.ack not in ACK_MODES:
        raise checks.error(f"{key}.feedback.ack", f"one of {', '.join(ACK_MODES)}, got {project.feedback.ack!r}")
    if project.feedback.failover_after_s <= 0:
        raise checks.error(f"{key}.feedback.failover_after_s",
                           f"must be more than 0 seconds, got {project.feedback.failover_after_s!r}")
    if not 0 <= project.feedback.coalesce_s <= MAX_COALESCE_S:
        raise checks.error(f"{key}.feedback.coalesce_s",
                           f"must be 0 (off) to {MAX_COALESCE_S:g} seconds, got {project.feedback.coalesce_s!r}")
    if not project.feedback.coalesce_s <= project.feedback.coalesce_max_s <= MAX_COALESCE_S:
        raise checks.error(f"{key}.feedback.coalesce_max_s",
                           f"must be coalesce_s ({project.feedback.coalesce_s:g}) to {MAX_COALESCE_S:g} seconds, "
                           f"got {project.feedback.coalesce_max_s!r}")


def check_unique(checks: ConfigChecks, projects: list[ProjectConfig]) -> None:
    """Names become component names (`monitor:lawley`): two alike would fight over one log."""
    names: dict[str, int] = {}
    for i, project in enumerate(projects):
        if not NAME.match(project.name):
            raise checks.error(f"{project_key(i, project.name)}.name",
                               "must be letters, digits, '.', '_' or '-' (at most 64), starting with a letter or digit")
        if project.name in names:
            raise checks.error(f"projects[{i}].name",
                               f"{project.name!r} is already the name of the project at position {names[project.name]}"
                               " (each [[projects]] needs its own name)")
        names[project.name] = i


def check(checks: ConfigChecks, config: Any) -> Any:
    """Each project's accounts resolved (an only account is the default), and each account that names no
    `follow_groups` following the groups of the projects it listens for."""
    projects = [with_accounts(checks, project, i, config.accounts) for i, project in enumerate(config.projects)]
    accounts = {name: account if account.follow_groups else replace(account, follow_groups=sorted(
                    {g for p in projects if p.listen_account == name for g in p.groups}))
                for name, account in config.accounts.items()}
    return replace(config, projects=projects, accounts=accounts)


def with_accounts(checks: ConfigChecks, project: ProjectConfig, i: int,
                  accounts: dict[str, AccountConfig]) -> ProjectConfig:
    key = project_key(i, project.name)
    listen = project.listen_account
    if not listen:
        if len(accounts) != 1:
            raise checks.error(f"{key}.listen_account", "required when there is more than one account")
        listen = next(iter(accounts))
    send = project.send_account or (project.send_accounts[0] if project.send_accounts else listen)
    if project.send_accounts and send != project.send_accounts[0]:
        raise checks.error(f"{key}.send_account", f"{send!r} is not the first of send_accounts "
                                                  f"{project.send_accounts!r} (give one or the other)")
    senders = project.send_accounts or [send]
    checks.check_no_repeats(senders, f"{key}.send_accounts")
    named = [("listen_account", listen)] + ([(f"send_accounts[{j}]", name) for j, name in enumerate(senders)]
                                             if project.send_accounts else [("send_account", send)])
    for attr, name in named:
        if name not in accounts:
            raise checks.error(f"{key}.{attr}", f"no account named {name!r}")
    return replace(project, listen_account=listen, send_account=send, send_accounts=senders)


def check_database(checks: ConfigChecks, database: DatabaseConfig) -> DatabaseConfig:
    if database.url and not is_postgres_url(database.url):
        raise checks.error("database.url", "expected a postgresql://user@host/dbname URL (or no [database] table "
                                           "for drops.db in data_dir)")
    if not DB_SCHEMA_NAME.match(database.schema):
        raise checks.error("database.schema", f"expected a lower-case SQL name (letters, digits, _), "
                                              f"got {database.schema!r}")
    return database


def read_webhooks(checks: ConfigChecks, raw: object, drops_api: DropsApiConfig) -> list[WebhookConfig]:
    """[[webhooks]] and [drops_api], checked together: drops-api delivers the webhooks."""
    checks.check_port(drops_api.port, "drops_api.port")
    checks.check_supervision(drops_api.watchdog_sec, drops_api.rss_limit_mb, "drops_api")
    checks.check_token(drops_api.token, "drops_api.token", "host", drops_api.host)
    checks.check_origins(drops_api.allowed_origins, "drops_api.allowed_origins")
    if not isinstance(raw, list):
        raise checks.error("webhooks", "expected an array of tables ([[webhooks]])")
    hooks = [checks.table(WebhookConfig, body, f"webhooks[{i}]") for i, body in enumerate(raw)]
    if hooks and not drops_api.enabled:
        raise checks.error("drops_api.enabled", "must be true when [[webhooks]] are configured (drops-api delivers them)")
    names: dict[str, int] = {}
    for i, hook in enumerate(hooks):
        key = f"webhooks[{i}]"
        if not hook.url.startswith(("http://", "https://")) or not _has_host_and_port(hook.url):
            raise checks.error(f"{key}.url", f"expected an http(s) URL, got {hook.url!r}")
        if not hook.name:
            hook = hooks[i] = replace(hook, name=webhook_name(hook.url))
            if hook.name in names:
                raise checks.error(f"{key}.name", f"missing, and the name derived from the url ({hook.name!r}) is "
                                                  f"the name of webhooks[{names[hook.name]}]: give each a name")
        if not WEBHOOK_NAME.match(hook.name) or hook.name in names:
            raise checks.error(f"{key}.name", f"expected a unique name of letters, digits, _ . - (got {hook.name!r})")
        names[hook.name] = i
        if hook.start_at not in WEBHOOK_STARTS:
            raise checks.error(f"{key}.start_at", f"expected one of {', '.join(map(repr, WEBHOOK_STARTS))}, "
                                                  f"got {hook.start_at!r}")
        if not hook.events:
            raise checks.error(f"{key}.events", f"needs at least one of {', '.join(WEBHOOK_EVENTS)}")
        for j, event in enumerate(hook.events):
            if event not in WEBHOOK_EVENTS:
                raise checks.error(f"{key}.events[{j}]", f"unknown event {event!r} (known: {', '.join(WEBHOOK_EVENTS)})")
        check_secret(checks, hook.secret, f"{key}.secret")
        checks.check_positive(hook.max_attempts, f"{key}.max_attempts")
        for name in ("timeout", "backoff_initial", "backoff_max"):
            checks.check_positive(getattr(hook, name), f"{key}.{name}")
    return hooks


def check_secret(checks: ConfigChecks, secret: str, key: str) -> None:
    prefix, _, encoded = secret.partition("_")
    try:
        size = len(base64.b64decode(encoded, validate=True)) if prefix == "whsec" else 0
    except ValueError:
        size = 0
    if not 24 <= size <= 64:
        raise checks.error(key, "expected whsec_<base64 of 24 to 64 random bytes> (Standard Webhooks), e.g. "
                                "python3 -c 'import base64,os; print(\"whsec_\" + base64.b64encode(os.urandom(32)).decode())'")


def _has_host_and_port(url: str) -> bool:
    """A host, and a port that is a number (urlsplit's `port` raises on `:99999` or `:x`)."""
    try:
        split = urlsplit(url)
        split.port  # noqa: B018 - read for its check
    except ValueError:
        return False
    return bool(split.hostname)


def ports(config: DropsTables) -> list[tuple[str, str, int]]:
    return [("drops_api.port", config.drops_api.host, config.drops_api.port)] if config.drops_api.enabled else []


def secret_keys(config: DropsTables) -> list[str]:
    found = ["drops_api.token"] if config.drops_api.token else []
    found += ["database.url"] if has_password(config.database.url) and not placeholder_url(config.database.url) else []
    found += [f"webhooks[{i}].secret" for i in range(len(config.webhooks))]
    return found + [f"webhooks[{i}].url" for i, hook in enumerate(config.webhooks) if has_password(hook.url)]


def urls(config: DropsTables) -> list[tuple[str, str]]:
    found = [(f"webhooks[{i}].url", hook.url) for i, hook in enumerate(config.webhooks)]
    return found + ([("database.url", config.database.url)] if config.database.url else [])


def counts(config: DropsTables) -> list[str]:
    return [f"{len(config.projects)} project(s)"]


SLICE = ConfigSlice(DropsTables, read, check, ports=ports, secret_keys=secret_keys, urls=urls, counts=counts)
