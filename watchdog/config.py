"""System configuration: one TOML file, validated on load.

Why validate by hand instead of with a schema library: every child process
loads this file on a cold start, and the restart time of the bridge is the
number this product is judged by; dataclasses plus ~100 lines cost nothing to
import. A typo must fail at start with exit code 2 naming the key and file,
never later with a traceback.
"""
from __future__ import annotations

import base64
import ipaddress
import re
import stat
import sys
import tomllib
import typing
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path

from watchdog.exitcodes import EXIT_CONFIG
from watchdog.programs import Program

DEFAULT_DROP_PATTERN = r"(?i)\bDR\d{6,8}\b"
GROUP_JID = re.compile(r"^[0-9]+(-[0-9]+)?@g\.us$")
PHONE = re.compile(r"^[0-9]{6,15}$")
# Account and project names become component names, file names and CLI arguments.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MIN_TRAFFIC_INTERVAL = 0.01  # seconds between demo posts: below this the simulator floods its own queue
MIN_HEARTBEAT = 0.5  # watchdog_sec: below this a loaded machine misses heartbeats and restarts for nothing
MIN_RSS_LIMIT_MB = 16  # a Python process needs more than this just to start
MIN_LOG_BYTES = 4096  # a rotation threshold smaller than a few records rotates on every line
ORIGIN = re.compile(r"^https?://[^/\s?#]+$")


class ConfigError(Exception):
    """A configuration problem; the message names the file and the key."""

    exit_code = EXIT_CONFIG


@dataclass(frozen=True)
class ProbeConfig:
    """HTTP health probe of a bridge, with the usual Kubernetes-style knobs."""

    period: float = 1.0
    timeout: float = 1.0
    failure_threshold: int = 3
    initial_delay: float = 5.0


@dataclass(frozen=True)
class TrafficConfig:
    """Demo traffic: the simulator posts drop numbers so the demo shows work."""

    enabled: bool = False
    interval: float = 3.0


@dataclass(frozen=True)
class SimGroupConfig:
    jid: str
    name: str
    participants: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SimConfig:
    """The simulated WhatsApp service; the watchdog starts it when enabled."""

    enabled: bool = True
    port: int = 0
    # Server-initiated disconnects: a random delay in [min, max] seconds; [] = never.
    disconnect_every: list[float] = field(default_factory=list)
    groups: list[SimGroupConfig] = field(default_factory=list)
    traffic: TrafficConfig = field(default_factory=TrafficConfig)
    watchdog_sec: float = 5.0
    rss_limit_mb: int = 0


@dataclass(frozen=True)
class MediaLimitsConfig:
    """Largest media file per type, in MB: WhatsApp's own limits (bridge/media.py) unless lowered."""

    image: float = 5.0
    video: float = 16.0
    audio: float = 16.0
    document: float = 100.0


@dataclass(frozen=True)
class AccountConfig:
    """One WhatsApp number: one session, one bridge process."""

    name: str
    phone: str
    transport: str = "sim"
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    api_port_fallback: bool = False  # demo: a free port when api_port is taken (production: never, callers need it)
    api_token: str = ""
    store: Path = Path()  # default: accounts/<name>/messages.db
    session_dir: Path = Path()  # default: accounts/<name>/session (holds the lock)
    session_db: str = ""  # neonize: SQLite file in session_dir, or a postgres:// URL
    download_dir: Path = Path()  # default: accounts/<name>/downloads
    media_dirs: list[Path] = field(default_factory=list)  # default: [media]
    follow_groups: list[str] = field(default_factory=list)  # default: its projects' groups
    watchdog_sec: float = 5.0
    rss_limit_mb: int = 0
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    # The watchdog keeps a warm standby bridge waiting on the session lock: it takes over a dead or hung
    # bridge without a cold start (Python and the imports are most of a restart).
    standby: bool = True
    # Browser-forgery guard (watchdog/web_guard.py): extra Host names and Origins a reverse proxy uses.
    api_allowed_hosts: list[str] = field(default_factory=list)
    api_allowed_origins: list[str] = field(default_factory=list)
    media_max_mb: MediaLimitsConfig = field(default_factory=MediaLimitsConfig)
    # The outbox (bridge/outbox.py): attempts before a row is dead-lettered; how long a request without an
    # Idempotency-Key waits for delivery; how long an identical keyless request counts as a retry (0 = off).
    send_max_attempts: int = 5
    send_wait_s: float = 8.0
    dedupe_window_s: float = 120.0

    @property
    def component(self) -> str:
        return f"bridge:{self.name}"

    @property
    def jid(self) -> str:
        return f"{self.phone}@s.whatsapp.net"


@dataclass(frozen=True)
class FeedbackConfig:
    auto_ack: bool = True
    template: str = "@{number} {drop} received, thank you"


@dataclass(frozen=True)
class ProjectConfig:
    """One project: the groups where its contractors post drop numbers."""

    name: str
    groups: list[str]
    environment: str = "prod"
    pattern: str = DEFAULT_DROP_PATTERN
    enabled: bool = True
    listen_account: str = ""  # default: the only account
    send_account: str = ""  # default: listen_account
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    watchdog_sec: float = 5.0
    rss_limit_mb: int = 0

    @property
    def component(self) -> str:
        return f"monitor:{self.name}"


@dataclass(frozen=True)
class AlertConfig:
    url: str
    format: str = "json"  # slack | discord | json
    repeat_interval: float = 3600.0
    disconnect_threshold: float = 120.0
    rules: list[str] = field(
        default_factory=lambda: list(ALERT_RULES)
    )


ALERT_RULES = ("crash_loop", "hang", "disconnect", "stream_replaced", "logged_out", "not_paired", "config_failed", "webhook_dead")


@dataclass(frozen=True)
class DropsApiConfig:
    """The drops and feedback API for the web app (component drops-api); it also delivers the webhooks."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 0
    token: str = ""
    allowed_hosts: list[str] = field(default_factory=list)  # Host names beyond loopback/IPs (a reverse proxy)
    allowed_origins: list[str] = field(default_factory=list)  # browser Origins allowed to POST
    watchdog_sec: float = 5.0
    rss_limit_mb: int = 0


WEBHOOK_EVENTS = ("drop.recorded", "drop.backfilled", "drop.resubmitted", "feedback.sent", "feedback.delivered",
                  "feedback.read", "feedback.failed")
WEBHOOK_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class WebhookConfig:
    """One receiver of signed events (Standard Webhooks); `secret` is `whsec_<base64 of 24-64 bytes>`."""

    name: str
    url: str
    secret: str
    events: list[str] = field(default_factory=lambda: list(WEBHOOK_EVENTS))
    max_attempts: int = 10
    timeout: float = 10.0  # per attempt
    backoff_initial: float = 1.0  # wait after the first failed attempt, doubling (plus jitter) up to backoff_max
    backoff_max: float = 600.0


@dataclass(frozen=True)
class WatchdogConfig:
    control_host: str = "127.0.0.1"
    control_port: int = 0
    control_token: str = ""
    recovery_log: Path = Path("recoveries.jsonl")
    recovery_log_max_bytes: int = 10 * 1024 * 1024
    child_log_max_bytes: int = 10 * 1024 * 1024
    term_grace: float = 2.0  # SIGTERM -> SIGKILL for a hung child
    stop_timeout: float = 10.0  # per component on shutdown
    backoff_initial: float = 0.1
    backoff_max: float = 30.0
    backoff_reset_after: float = 60.0  # healthy this long -> backoff starts over
    crash_loop_exits: int = 5
    crash_loop_window: float = 60.0
    start_timeout: float = 60.0  # a child not ready by then is a hang (its start-up grace ends)
    overload_grace: float = 30.0  # a starved (runnable, gaining CPU) child gets this long before it counts as hung
    max_starting: int = 0  # children starting at once; 0 = twice the CPU count
    restart_rate: float = 10.0  # restarts per second, all programs together
    process_check_period: float = 1.0  # /proc state (SIGSTOP = hang) of every child
    fork_template: bool = True  # fork our own components from a pre-loaded template (watchdog/forkserver.py)
    control_allowed_hosts: list[str] = field(default_factory=list)  # see AccountConfig.api_allowed_hosts
    control_allowed_origins: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DatabaseConfig:
    """Where the drops store lives: drops.db in data_dir (url empty, the default) or PostgreSQL."""

    url: str = ""  # postgresql://user[:password]@host[:port]/dbname[?...]
    schema: str = "wa_watchdog"


DB_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class Config:
    path: Path
    data_dir: Path
    watchdog: WatchdogConfig
    sim: SimConfig | None
    accounts: dict[str, AccountConfig]
    projects: list[ProjectConfig]
    alerts: list[AlertConfig]
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    programs: list[Program] = field(default_factory=list)  # [[programs]]; built-ins: watchdog.builtins
    drops_api: DropsApiConfig = field(default_factory=DropsApiConfig)
    webhooks: list[WebhookConfig] = field(default_factory=list)

    def account(self, name: str) -> AccountConfig:
        try:
            return self.accounts[name]
        except KeyError:
            raise ConfigError(f"{self.path}: no account named {name!r} (known: {', '.join(self.accounts)})") from None

    def project(self, name: str) -> ProjectConfig:
        for project in self.projects:
            if project.name == name:
                return project
        known = ", ".join(p.name for p in self.projects)
        raise ConfigError(f"{self.path}: no project named {name!r} (known: {known})")

    @property
    def own_jids(self) -> set[str]:
        """JIDs of our own numbers: their messages are never drops."""
        return {account.jid for account in self.accounts.values()}


def project_key(i: int, name: object) -> str:
    """How config errors name a project: by its name (`projects[lawley]`), by position only while it has none."""
    return f"projects[{name}]" if isinstance(name, str) and name else f"projects[{i}]"


def load(path: str | Path, data_dir: str | Path | None = None) -> Config:
    """Read and validate a config file; raises ConfigError naming the bad key."""
    path = Path(path).resolve()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    check_permissions(path, raw)
    return _Loader(path).build(raw, Path(data_dir).resolve() if data_dir else None)


SECRET_WORDS = ("token", "secret", "password")


def _holds_secrets(raw: object) -> bool:
    if isinstance(raw, dict):
        return any((any(w in str(k) for w in SECRET_WORDS) and bool(v)) or _holds_secrets(v) for k, v in raw.items())
    if isinstance(raw, list):
        return any(_holds_secrets(item) for item in raw)
    return False


def check_permissions(path: Path, raw: dict) -> None:
    """Refuse a config that other local users can change; warn if they can read one that holds secrets.

    Why refuse: whoever can edit the config decides what the bridges read and send (media_dirs,
    webhook URLs), and a restart applies it. A directory others can write lets them replace the file.
    """
    for target, what in ((path, "file"), (path.parent, "directory")):
        mode = target.stat().st_mode
        if mode & stat.S_IWOTH and not (what == "directory" and mode & stat.S_ISVTX):
            raise ConfigError(f"{path}: the config {what} {target} is writable by other users (mode "
                              f"{stat.S_IMODE(mode):04o}); any local user could change what runs and what is sent: "
                              f"chmod o-w {target}")
    if path.stat().st_mode & stat.S_IROTH and _holds_secrets(raw):
        print(f"wa-watchdog: warning: {path} holds tokens or secrets and is readable by other users "
              f"(mode {stat.S_IMODE(path.stat().st_mode):04o}): chmod o-r {path}", file=sys.stderr)


class _Loader:
    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {problem}")

    def build(self, raw: dict, data_dir_override: Path | None) -> Config:
        known = {"data_dir", "watchdog", "sim", "accounts", "projects", "alerts", "database", "programs", "drops_api",
                 "webhooks"}
        for key in raw:
            if key not in known:
                raise self.error(key, "unknown key")
        data_dir_raw = raw.get("data_dir", "var")
        if not isinstance(data_dir_raw, str):
            raise self.error("data_dir", f"expected a string, got {_kind(data_dir_raw)}")
        data_dir = data_dir_override or (self.path.parent / data_dir_raw).resolve()

        watchdog = self.table(WatchdogConfig, raw.get("watchdog", {}), "watchdog")
        watchdog = replace(watchdog, recovery_log=data_dir / watchdog.recovery_log)
        sim = self.table(SimConfig, raw["sim"], "sim") if "sim" in raw else None
        accounts_raw = raw.get("accounts")
        if not isinstance(accounts_raw, dict) or not accounts_raw:
            raise self.error("accounts", "missing required value: at least one [accounts.NAME] table")
        accounts = {
            name: self.table(AccountConfig, {"name": name, **self.as_table(body, f"accounts.{name}")}, f"accounts.{name}")
            for name, body in accounts_raw.items()
        }
        projects_raw = raw.get("projects", [])
        if not isinstance(projects_raw, list):
            raise self.error("projects", "expected an array of tables ([[projects]])")
        projects = [self.table(ProjectConfig, body, project_key(i, body.get("name") if isinstance(body, dict) else None))
                    for i, body in enumerate(projects_raw)]
        alerts_raw = raw.get("alerts", [])
        if not isinstance(alerts_raw, list):
            raise self.error("alerts", "expected an array of tables ([[alerts]])")
        alerts = [self.table(AlertConfig, body, f"alerts[{i}]") for i, body in enumerate(alerts_raw)]

        projects = [self.check_project(p, i, accounts) for i, p in enumerate(projects)]
        accounts = {name: self.check_account(a, data_dir, projects, sim) for name, a in accounts.items()}
        for i, alert in enumerate(alerts):
            self.check_alert(alert, i)
        self.check_watchdog(watchdog)
        if sim is not None:
            self.check_sim(sim)
        self.check_unique(accounts, projects)
        database = self.check_database(self.table(DatabaseConfig, raw.get("database", {}), "database"))
        drops_api = self.table(DropsApiConfig, raw.get("drops_api", {}), "drops_api")
        webhooks = self.webhooks(raw.get("webhooks", []), drops_api)
        self.check_ports(watchdog, sim, accounts, drops_api)
        config = Config(self.path, data_dir, watchdog, sim, accounts, projects, alerts, database=database,
                        drops_api=drops_api, webhooks=webhooks)
        return self.check_programs(config, raw.get("programs", []))

    # -- generic typed tables -------------------------------------------------

    def as_table(self, value: object, key: str) -> dict:
        if not isinstance(value, dict):
            raise self.error(key, f"expected a table, got {_kind(value)}")
        return value

    def table(self, cls: type, value: object, key: str):
        body = self.as_table(value, key)
        hints = typing.get_type_hints(cls)
        names = {f.name for f in fields(cls)}
        for name in body:
            if name not in names:
                raise self.error(f"{key}.{name}", "unknown key")
        kwargs = {}
        for f in fields(cls):
            if f.name in body:
                kwargs[f.name] = self.value(hints[f.name], body[f.name], f"{key}.{f.name}")
            elif f.default is MISSING and f.default_factory is MISSING:
                raise self.error(f"{key}.{f.name}", "missing required value")
        return cls(**kwargs)

    def value(self, hint: object, value: object, key: str) -> object:
        origin = typing.get_origin(hint)
        if origin is list:
            (item_hint,) = typing.get_args(hint)
            if not isinstance(value, list):
                raise self.error(key, f"expected an array, got {_kind(value)}")
            return [self.value(item_hint, item, f"{key}[{i}]") for i, item in enumerate(value)]
        if hint is bool:
            if not isinstance(value, bool):
                raise self.error(key, f"expected true or false, got {_kind(value)}")
            return value
        if hint is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.error(key, f"expected an integer, got {_kind(value)}")
            return value
        if hint is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.error(key, f"expected a number, got {_kind(value)}")
            return float(value)
        if hint is str:
            if not isinstance(value, str):
                raise self.error(key, f"expected a string, got {_kind(value)}")
            return value
        if hint is Path:
            if not isinstance(value, str) or not value:
                raise self.error(key, f"expected a path string, got {_kind(value)}")
            return Path(value)
        return self.table(hint, value, key)

    # -- cross-field checks ----------------------------------------------------

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
        if not _is_loopback(account.api_host) and not account.api_token:
            raise self.error(f"{key}.api_token", f"required when api_host is not loopback ({account.api_host})")
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
            if rule not in ALERT_RULES:
                raise self.error(f"{key}.rules[{j}]", f"unknown rule {rule!r} (known: {', '.join(ALERT_RULES)})")
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
        if not _is_loopback(watchdog.control_host) and not watchdog.control_token:
            raise self.error("watchdog.control_token", f"required when control_host is not loopback ({watchdog.control_host})")
        self.check_origins(watchdog.control_allowed_origins, "watchdog.control_allowed_origins")

    def check_origins(self, origins: list[str], key: str) -> None:
        """An Origin is `scheme://host[:port]`, exactly as a browser sends it."""
        for i, origin in enumerate(origins):
            if not ORIGIN.match(origin):
                raise self.error(f"{key}[{i}]", f"expected an origin like https://qa.example.com, got {origin!r}")

    def check_database(self, database: DatabaseConfig) -> DatabaseConfig:
        if database.url and not database.url.startswith(("postgresql://", "postgres://")):
            raise self.error("database.url", "expected a postgresql://user@host/dbname URL (or no [database] table "
                                             "for drops.db in data_dir)")
        if not DB_SCHEMA_NAME.match(database.schema):
            raise self.error("database.schema", f"expected a lower-case SQL name (letters, digits, _), "
                                                f"got {database.schema!r}")
        return database

    def check_programs(self, config: Config, raw: object) -> Config:
        from watchdog import builtins, programs  # the built-ins know the config: imported once it exists
        declared = programs.parse(raw, self.error, self.path.parent)
        programs.check_names(declared, builtins.builtin_names(config), self.error)
        return replace(config, programs=declared)

    def webhooks(self, raw: object, drops_api: DropsApiConfig) -> list[WebhookConfig]:
        """[[webhooks]] and [drops_api], checked together: drops-api delivers the webhooks."""
        self.check_port(drops_api.port, "drops_api.port")
        self.check_supervision(drops_api.watchdog_sec, drops_api.rss_limit_mb, "drops_api")
        if not _is_loopback(drops_api.host) and not drops_api.token:
            raise self.error("drops_api.token", f"required when host is not loopback ({drops_api.host})")
        self.check_origins(drops_api.allowed_origins, "drops_api.allowed_origins")
        if not isinstance(raw, list):
            raise self.error("webhooks", "expected an array of tables ([[webhooks]])")
        hooks = [self.table(WebhookConfig, body, f"webhooks[{i}]") for i, body in enumerate(raw)]
        if hooks and not drops_api.enabled:
            raise self.error("drops_api.enabled", "must be true when [[webhooks]] are configured (drops-api delivers them)")
        names: set[str] = set()
        for i, hook in enumerate(hooks):
            key = f"webhooks[{i}]"
            if not WEBHOOK_NAME.match(hook.name) or hook.name in names:
                raise self.error(f"{key}.name", f"expected a unique name of letters, digits, _ . - (got {hook.name!r})")
            names.add(hook.name)
            if not hook.url.startswith(("http://", "https://")):
                raise self.error(f"{key}.url", f"expected an http(s) URL, got {hook.url!r}")
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


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _kind(value: object) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)
