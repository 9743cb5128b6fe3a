"""Checks of the configuration that types alone cannot express: ranges, formats, references, uniqueness."""
from __future__ import annotations

import base64
import ipaddress
import re
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

from watchdog.shared import alert_rules
from watchdog.shared.config_model import (DB_SCHEMA_NAME, GROUP_JID, MIN_HEARTBEAT, MIN_LOG_BYTES,
                                   MIN_RSS_LIMIT_MB, MIN_TRAFFIC_INTERVAL, NAME, ORIGIN, PHONE, WEBHOOK_EVENTS,
                                   WEBHOOK_NAME, WEBHOOK_STARTS, AccountConfig, AlertConfig, Config, DatabaseConfig,
                                   DropsApiConfig, ProbeConfig, ProjectConfig, SimConfig, WatchdogConfig, WebhookConfig,
                                   webhook_name)
from watchdog.shared.config_model import is_postgres_url
from watchdog.shared.config_secrets import placeholder_token
from watchdog.shared.config_tables import TableReader


# Directories of the system itself: the commands that write the data directory tighten it to 0750 and fill it,
# so one of these (not a folder inside it, such as /var/lib/wa-watchdog) is refused.
SYSTEM_DIRS = frozenset(Path(p) for p in (
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/media", "/mnt", "/opt",
    "/proc", "/root", "/run", "/run/user", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/usr/bin", "/usr/lib",
    "/usr/lib64", "/usr/local", "/usr/sbin", "/usr/share", "/usr/src", "/var", "/var/backups", "/var/cache",
    "/var/lib", "/var/local", "/var/lock", "/var/log", "/var/mail", "/var/opt", "/var/run", "/var/spool",
    "/var/tmp"))


def project_key(i: int, name: object) -> str:
    """How config errors name a project: by its name (`projects[lawley]`), by position only while it has none."""
    return f"projects[{name}]" if isinstance(name, str) and name else f"projects[{i}]"


class ConfigChecks(TableReader):
    """The cross-field checks of one config file, each raising ConfigError naming the key."""

    def check_positive(self, value: float, key: str) -> None:
        if value <= 0:
            raise self.error(key, f"must be more than 0, got {value:g}")

    def check_supervision(self, watchdog_sec: float, rss_limit_mb: int, key: str,
                          probe: ProbeConfig | None = None) -> None:
        """Per-component supervision knobs: watchdog_sec 0 = no heartbeat check, rss_limit_mb 0 = no limit."""
        if watchdog_sec != 0 and watchdog_sec < MIN_HEARTBEAT:
            raise self.error(f"{key}.watchdog_sec",
                             f"must be 0 (off) or at least {MIN_HEARTBEAT:g} seconds, got {watchdog_sec:g}")
        if rss_limit_mb != 0 and rss_limit_mb < MIN_RSS_LIMIT_MB:
            raise self.error(f"{key}.rss_limit_mb", f"must be 0 (no limit) or at least {MIN_RSS_LIMIT_MB}, got {rss_limit_mb}")
        if probe is not None:
            for name in ("period", "timeout", "failure_threshold"):
                self.check_positive(getattr(probe, name), f"{key}.probe.{name}")
            if probe.initial_delay < 0:
                raise self.error(f"{key}.probe.initial_delay", f"must be 0 or more seconds, got {probe.initial_delay:g}")

    def check_port(self, port: int, key: str) -> None:
        if not 0 <= port <= 65535:
            raise self.error(key, f"port {port} out of range 0-65535 (0 = any free port)")

    def check_data_dir(self, data_dir: Path) -> None:
        if data_dir in SYSTEM_DIRS:
            raise self.error("data_dir", f"{data_dir} is a system directory; the data directory must be the "
                                         "service's own, e.g. /var/lib/wa-watchdog")

    def check_account(self, account: AccountConfig, data_dir: Path, projects: list[ProjectConfig],
                      sim: SimConfig | None) -> AccountConfig:
        key = f"accounts.{account.name}"
        if account.transport not in ("sim", "neonize"):
            raise self.error(f"{key}.transport", f"must be 'sim' or 'neonize', got {account.transport!r}")
        if account.transport == "sim" and sim is None:
            raise self.error(f"{key}.transport", "'sim' needs a [sim] table")
        if not PHONE.match(account.phone):
            raise self.error(f"{key}.phone", f"expected digits only with country code (e.g. 27710000000), got {account.phone!r}")
        self.check_port(account.api_port, f"{key}.api_port")
        self.check_supervision(account.watchdog_sec, account.rss_limit_mb, key, account.probe)
        self.check_token(account.api_token, f"{key}.api_token", "api_host", account.api_host)
        self.check_origins(account.api_allowed_origins, f"{key}.api_allowed_origins")
        for media_type in ("image", "video", "audio", "document"):
            self.check_positive(getattr(account.media_max_mb, media_type), f"{key}.media_max_mb.{media_type}")
        self.check_positive(account.send_max_attempts, f"{key}.send_max_attempts")
        for name in ("send_wait_s", "dedupe_window_s"):
            if getattr(account, name) < 0:
                raise self.error(f"{key}.{name}", f"must be 0 (off) or more seconds, got {getattr(account, name):g}")
        for i, jid in enumerate(account.follow_groups):
            if not GROUP_JID.match(jid):
                raise self.error(f"{key}.follow_groups[{i}]", f"not a group JID (like 120363000000000001@g.us): {jid!r}")
        self.check_no_repeats(account.follow_groups, f"{key}.follow_groups")
        self.check_no_repeats(account.media_dirs, f"{key}.media_dirs")
        base = data_dir / "accounts" / account.name
        follow = account.follow_groups or sorted(
            {g for p in projects if p.listen_account == account.name for g in p.groups}
        )
        return replace(
            account,
            store=data_dir / account.store if account.store != Path() else base / "messages.db",
            session_dir=data_dir / account.session_dir if account.session_dir != Path() else base / "session",
            download_dir=data_dir / account.download_dir if account.download_dir != Path() else base / "downloads",
            media_dirs=[data_dir / d for d in account.media_dirs] or [data_dir / "media"],
            follow_groups=follow,
        )

    def check_project(self, project: ProjectConfig, i: int, accounts: dict[str, AccountConfig]) -> ProjectConfig:
        key = project_key(i, project.name)
        self.check_supervision(project.watchdog_sec, project.rss_limit_mb, key)
        if project.environment not in ("prod", "dev"):
            raise self.error(f"{key}.environment", f"must be 'prod' or 'dev', got {project.environment!r}")
        if not project.groups:
            raise self.error(f"{key}.groups", "needs at least one group JID")
        for j, jid in enumerate(project.groups):
            if not GROUP_JID.match(jid):
                raise self.error(f"{key}.groups[{j}]", f"not a group JID (like 120363000000000001@g.us): {jid!r}")
        self.check_no_repeats(project.groups, f"{key}.groups")
        try:
            re.compile(project.pattern)
        except re.error as exc:
            raise self.error(f"{key}.pattern", f"not a valid regular expression: {exc}") from None
        try:
            project.feedback.template.format(number="1", drop="DR1", project="p", group="g")
        except (KeyError, IndexError, ValueError) as exc:
            raise self.error(f"{key}.feedback.template",
                             f"unknown placeholder {exc}; use {{number}}, {{drop}}, {{project}}, {{group}}") from None
        listen = project.listen_account
        if not listen:
            if len(accounts) != 1:
                raise self.error(f"{key}.listen_account", "required when there is more than one account")
            listen = next(iter(accounts))
        send = project.send_account or listen
        for attr, name in (("listen_account", listen), ("send_account", send)):
            if name not in accounts:
                raise self.error(f"{key}.{attr}", f"no account named {name!r}")
        return replace(project, listen_account=listen, send_account=send)

    def check_alert(self, alert: AlertConfig, i: int) -> None:
        key = f"alerts[{i}]"
        if alert.format not in ("slack", "discord", "json"):
            raise self.error(f"{key}.format", f"must be slack, discord or json, got {alert.format!r}")
        if not alert.url.startswith(("http://", "https://")):
            raise self.error(f"{key}.url", f"expected an http(s) URL, got {alert.url!r}")
        for j, rule in enumerate(alert.rules):
            if alert_rules.get(rule) is None:
                raise self.error(f"{key}.rules[{j}]",
                                 f"unknown rule {rule!r} (known: {', '.join(alert_rules.known())})")
        self.check_no_repeats(alert.rules, f"{key}.rules")
        self.check_positive(alert.repeat_interval, f"{key}.repeat_interval")
        if alert.disconnect_threshold < 0:
            raise self.error(f"{key}.disconnect_threshold",
                             f"must be 0 or more seconds, got {alert.disconnect_threshold:g}")

    def check_watchdog(self, watchdog: WatchdogConfig) -> None:
        self.check_port(watchdog.control_port, "watchdog.control_port")
        for name in ("stop_timeout", "backoff_initial", "backoff_reset_after", "crash_loop_exits", "crash_loop_window"):
            self.check_positive(getattr(watchdog, name), f"watchdog.{name}")
        for name in ("recovery_log_max_bytes", "child_log_max_bytes"):
            if getattr(watchdog, name) < MIN_LOG_BYTES:
                raise self.error(f"watchdog.{name}", f"must be at least {MIN_LOG_BYTES} bytes, got {getattr(watchdog, name)}")
        for name in ("start_timeout", "overload_grace", "restart_rate", "process_check_period"):
            self.check_positive(getattr(watchdog, name), f"watchdog.{name}")
        if watchdog.max_starting < 0:
            raise self.error("watchdog.max_starting", f"must be 0 (twice the CPU count) or more, got {watchdog.max_starting}")
        if watchdog.term_grace < 0:
            raise self.error("watchdog.term_grace", f"must be 0 or more seconds, got {watchdog.term_grace:g}")
        if watchdog.backoff_max < watchdog.backoff_initial:
            raise self.error("watchdog.backoff_max", f"must be at least backoff_initial ({watchdog.backoff_initial:g}),"
                                                     f" got {watchdog.backoff_max:g}")
        self.check_token(watchdog.control_token, "watchdog.control_token", "control_host", watchdog.control_host)
        self.check_origins(watchdog.control_allowed_origins, "watchdog.control_allowed_origins")

    def check_token(self, token: str, key: str, host_key: str, host: str) -> None:
        """A bearer token: required off loopback, and never blank or the example's placeholder (anyone could
        guess it, and a blank one means none)."""
        if token and (not token.strip() or placeholder_token(token)):
            raise self.error(key, f"{token!r} is a placeholder, not a token: set a random one (openssl rand -hex 32)")
        if not _is_loopback(host) and not token:
            raise self.error(key, f"required when {host_key} is not loopback ({host}): set a random one "
                                  "(openssl rand -hex 32)")

    def check_origins(self, origins: list[str], key: str) -> None:
        """An Origin is `scheme://host[:port]`, exactly as a browser sends it."""
        for i, origin in enumerate(origins):
            if not ORIGIN.match(origin):
                raise self.error(f"{key}[{i}]", f"expected an origin like https://qa.example.com, got {origin!r}")

    def check_database(self, database: DatabaseConfig) -> DatabaseConfig:
        if database.url and not is_postgres_url(database.url):
            raise self.error("database.url", "expected a postgresql://user@host/dbname URL (or no [database] table "
                                             "for drops.db in data_dir)")
        if not DB_SCHEMA_NAME.match(database.schema):
            raise self.error("database.schema", f"expected a lower-case SQL name (letters, digits, _), "
                                                f"got {database.schema!r}")
        return database

    def check_programs(self, config: Config, raw: object) -> Config:
        from watchdog import builtins  # the built-ins know the config: imported once it exists
        from watchdog.shared import programs
        declared = programs.parse(raw, self.error, self.path.parent)
        programs.check_names(declared, builtins.builtin_names(config), self.error)
        return replace(config, programs=declared)

    def webhooks(self, raw: object, drops_api: DropsApiConfig) -> list[WebhookConfig]:
        """[[webhooks]] and [drops_api], checked together: drops-api delivers the webhooks."""
        self.check_port(drops_api.port, "drops_api.port")
        self.check_supervision(drops_api.watchdog_sec, drops_api.rss_limit_mb, "drops_api")
        self.check_token(drops_api.token, "drops_api.token", "host", drops_api.host)
        self.check_origins(drops_api.allowed_origins, "drops_api.allowed_origins")
        if not isinstance(raw, list):
            raise self.error("webhooks", "expected an array of tables ([[webhooks]])")
        hooks = [self.table(WebhookConfig, body, f"webhooks[{i}]") for i, body in enumerate(raw)]
        if hooks and not drops_api.enabled:
            raise self.error("drops_api.enabled", "must be true when [[webhooks]] are configured (drops-api delivers them)")
        names: dict[str, int] = {}
        for i, hook in enumerate(hooks):
            key = f"webhooks[{i}]"
            if not hook.url.startswith(("http://", "https://")) or not _has_host_and_port(hook.url):
                raise self.error(f"{key}.url", f"expected an http(s) URL, got {hook.url!r}")
            if not hook.name:
                hook = hooks[i] = replace(hook, name=webhook_name(hook.url))
                if hook.name in names:
                    raise self.error(f"{key}.name", f"missing, and the name derived from the url ({hook.name!r}) is "
                                                    f"the name of webhooks[{names[hook.name]}]: give each a name")
            if not WEBHOOK_NAME.match(hook.name) or hook.name in names:
                raise self.error(f"{key}.name", f"expected a unique name of letters, digits, _ . - (got {hook.name!r})")
            names[hook.name] = i
            if hook.start_at not in WEBHOOK_STARTS:
                raise self.error(f"{key}.start_at", f"expected one of {', '.join(map(repr, WEBHOOK_STARTS))}, "
                                                    f"got {hook.start_at!r}")
            if not hook.events:
                raise self.error(f"{key}.events", f"needs at least one of {', '.join(WEBHOOK_EVENTS)}")
            for j, event in enumerate(hook.events):
                if event not in WEBHOOK_EVENTS:
                    raise self.error(f"{key}.events[{j}]", f"unknown event {event!r} (known: {', '.join(WEBHOOK_EVENTS)})")
            self.check_secret(hook.secret, f"{key}.secret")
            self.check_positive(hook.max_attempts, f"{key}.max_attempts")
            for name in ("timeout", "backoff_initial", "backoff_max"):
                self.check_positive(getattr(hook, name), f"{key}.{name}")
        return hooks

    def check_secret(self, secret: str, key: str) -> None:
        prefix, _, encoded = secret.partition("_")
        try:
            size = len(base64.b64decode(encoded, validate=True)) if prefix == "whsec" else 0
        except ValueError:
            size = 0
        if not 24 <= size <= 64:
            raise self.error(key, "expected whsec_<base64 of 24 to 64 random bytes> (Standard Webhooks), e.g. "
                                  "python3 -c 'import base64,os; print(\"whsec_\" + base64.b64encode(os.urandom(32)).decode())'")

    def check_sim(self, sim: SimConfig) -> None:
        self.check_port(sim.port, "sim.port")
        if sim.url and not re.match(r"^http://[^/\s:]+:[0-9]+/?$", sim.url):
            raise self.error("sim.url", f"expected http://HOST:PORT of a running simulator, got {sim.url!r}")
        self.check_supervision(sim.watchdog_sec, sim.rss_limit_mb, "sim")
        if sim.disconnect_every and (len(sim.disconnect_every) != 2 or not 0 < sim.disconnect_every[0] <= sim.disconnect_every[1]):
            raise self.error("sim.disconnect_every", "expected [min_seconds, max_seconds] with 0 < min <= max, or []")
        for i, group in enumerate(sim.groups):
            if not GROUP_JID.match(group.jid):
                raise self.error(f"sim.groups[{i}].jid", f"not a group JID: {group.jid!r}")
            if not group.name.strip():
                raise self.error(f"sim.groups[{i}].name", "must not be empty")
            for j, phone in enumerate(group.participants):
                if not PHONE.match(phone):
                    raise self.error(f"sim.groups[{i}].participants[{j}]",
                                     f"expected digits only with country code (e.g. 27710000001), got {phone!r}")
            self.check_no_repeats(group.participants, f"sim.groups[{i}].participants")
        self.check_no_repeats([g.jid for g in sim.groups], "sim.groups", what="jid")
        if sim.traffic.interval < MIN_TRAFFIC_INTERVAL:
            raise self.error("sim.traffic.interval",
                             f"must be at least {MIN_TRAFFIC_INTERVAL:g} seconds, got {sim.traffic.interval:g}")

    # -- uniqueness across tables ------------------------------------------------

    def check_no_repeats(self, values: list, key: str, what: str = "") -> None:
        """A list that names things (groups, rules, participants) holds each once."""
        seen: dict[object, int] = {}
        for i, value in enumerate(values):
            if value in seen:
                where = f"{key}[{i}].{what}" if what else f"{key}[{i}]"
                raise self.error(where, f"{value!r} repeats {key}[{seen[value]}]" + (f".{what}" if what else ""))
            seen[value] = i

    def check_unique(self, accounts: dict[str, AccountConfig], projects: list[ProjectConfig]) -> None:
        """Names become component names (`monitor:lawley`): two alike would fight over one port and one log."""
        for name in accounts:
            if not NAME.match(name):
                raise self.error(f"accounts.{name}", "name must be letters, digits, '.', '_' or '-' (at most 64), "
                                                      "starting with a letter or digit")
        phones: dict[str, str] = {}
        for account in accounts.values():
            if account.phone in phones:
                raise self.error(f"accounts.{account.name}.phone", f"{account.phone} is also accounts.{phones[account.phone]}"
                                                                   ".phone: one number has one session")
            phones[account.phone] = account.name
        names: dict[str, int] = {}
        for i, project in enumerate(projects):
            if not NAME.match(project.name):
                raise self.error(f"{project_key(i, project.name)}.name",
                                 "must be letters, digits, '.', '_' or '-' (at most 64), starting with a letter or digit")
            if project.name in names:
                raise self.error(f"projects[{i}].name",
                                 f"{project.name!r} is already the name of the project at position {names[project.name]}"
                                 " (each [[projects]] needs its own name)")
            names[project.name] = i

    def check_ports(self, watchdog: WatchdogConfig, sim: SimConfig | None, accounts: dict[str, AccountConfig],
                    drops_api: DropsApiConfig) -> None:
        """Every fixed port (0 = any free port) once: two listeners on one port end in `Address already in use`."""
        ports = [("watchdog.control_port", watchdog.control_port)]
        if sim is not None:
            ports.append(("sim.port", sim.port))
        ports += [(f"accounts.{a.name}.api_port", a.api_port) for a in accounts.values()]
        if drops_api.enabled:
            ports.append(("drops_api.port", drops_api.port))
        taken: dict[int, str] = {}
        for key, port in ports:
            if port and port in taken:
                raise self.error(key, f"port {port} is also {taken[port]}")
            taken[port] = key


def _has_host_and_port(url: str) -> bool:
    """A host, and a port that is a number (urlsplit's `port` raises on `:99999` or `:x`)."""
    try:
        split = urlsplit(url)
        split.port  # noqa: B018 - read for its check
    except ValueError:
        return False
    return bool(split.hostname)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

