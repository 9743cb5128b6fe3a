"""The configuration's shape: one frozen dataclass per TOML table, with defaults and limits.

Why plain dataclasses: every child process loads the config on a cold start, and
they cost nothing to import (watchdog/shared/config.py explains the validation).
"""
from __future__ import annotations

import hashlib
import re
from typing import Any
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from watchdog.shared import alert_rules
from watchdog.shared.exitcodes import EXIT_CONFIG
from watchdog.shared.programs import Program


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
    url: str = ""  # a simulator already running (http://127.0.0.1:PORT): used instead of starting one (issue 21)
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
    # Browser-forgery guard (watchdog/shared/web_guard.py): extra Host names and Origins a reverse proxy uses.
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


def monitor_component(projects: list[ProjectConfig]) -> str:
    """The program name of a monitor process: `monitor:lawley`, or `monitor:lawley..mohadin` for several."""
    return projects[0].component if len(projects) == 1 else f"{projects[0].component}..{projects[-1].name}"


AUTO = "auto"
ALONE_UP_TO = 8  # "auto": up to this many enabled projects, each has a process of its own (a fault touches one)
GROUP_OF = 20  # "auto": past that, processes of at most this many (60 projects: 5.5 % idle CPU apart, 1.0 % in 20s)


@dataclass(frozen=True)
class MonitorsConfig:
    """How projects share monitor processes: at scale a process each costs memory and wake-ups (monitors/main.py)."""

    projects_per_process: int | str = AUTO  # enabled projects, in config order, this many to a process; or "auto"

    def group_size(self, enabled: int) -> int:
        """Projects per process for `enabled` projects: "auto" keeps a handful apart and groups more, evenly."""
        if self.projects_per_process != AUTO:
            return int(self.projects_per_process)
        if enabled <= ALONE_UP_TO:
            return 1
        processes = -(-enabled // GROUP_OF)
        return -(-enabled // processes)


@dataclass(frozen=True)
class AlertConfig:
    url: str
    format: str = "json"  # slack | discord | json
    repeat_interval: float = 3600.0
    disconnect_threshold: float = 120.0
    rules: list[str] = field(default_factory=lambda: list(alert_rules.known()))  # every registered rule


@dataclass(frozen=True)
class DropsApiConfig:
    """The drops and feedback API for the web app (component drops-api); it also delivers the webhooks."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 0
    port_fallback: bool = False  # demo: a free port when `port` is taken (production: never, the web app needs it)
    token: str = ""
    allowed_hosts: list[str] = field(default_factory=list)  # Host names beyond loopback/IPs (a reverse proxy)
    allowed_origins: list[str] = field(default_factory=list)  # browser Origins allowed to call it (CORS)
    watchdog_sec: float = 5.0
    rss_limit_mb: int = 0


WEBHOOK_EVENTS = ("drop.recorded", "drop.backfilled", "drop.resubmitted", "feedback.sent", "feedback.delivered",
                  "feedback.read", "feedback.failed")
WEBHOOK_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def webhook_name(url: str) -> str:
    """The name of a webhook without one: host, port and path of its URL (`127.0.0.1-3005-api-wa-events`).

    Stable (the same URL, the same name: the store keys a receiver's place by it); never the userinfo or
    the query, which may hold a token, since the name shows in status, logs and metrics. Past 64
    characters, a hash of host, port and path keeps it unique.
    """
    split = urlsplit(url)
    base = f"{(split.hostname or '').lower()}:{split.port or ''}{split.path}"
    name = re.sub(r"[^A-Za-z0-9_.]+", "-", base).strip("-.") or "webhook"
    if len(name) > 64:
        name = f"{name[:55]}-{hashlib.sha256(base.encode()).hexdigest()[:8]}"
    return name


WEBHOOK_STARTS = ("now", "oldest")  # where a webhook new to the drops store starts: the next event, or every one kept


@dataclass(frozen=True)
class WebhookConfig:
    """One receiver of signed events (Standard Webhooks); `secret` is `whsec_<base64 of 24-64 bytes>`.

    `name` keys the receiver's place in the event stream; left out, it is derived from the URL (`webhook_name`).
    """

    url: str
    secret: str
    name: str = ""
    events: list[str] = field(default_factory=lambda: list(WEBHOOK_EVENTS))
    start_at: str = "now"  # one of WEBHOOK_STARTS; read once, when the store first sees the name
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
    fork_template: bool = True  # fork our own components from a pre-loaded template (watchdog/core/forkserver.py)
    control_allowed_hosts: list[str] = field(default_factory=list)  # see AccountConfig.api_allowed_hosts
    control_allowed_origins: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DatabaseConfig:
    """Where the drops store lives: drops.db in data_dir (url empty, the default) or PostgreSQL."""

    url: str = ""  # postgresql://user[:password]@host[:port]/dbname[?...]
    schema: str = "wa_watchdog"


def is_postgres_url(url: str) -> bool:
    """True for a PostgreSQL connection URL (libpq takes both schemes); otherwise a SQLite file is meant."""
    return url.startswith(("postgresql://", "postgres://"))


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
    monitors: MonitorsConfig = field(default_factory=MonitorsConfig)
    cluster: Any = None  # [cluster]: monitors.cluster_config.ClusterConfig (issue 21), None for one host

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

    def monitor_groups(self) -> list[list[ProjectConfig]]:
        """The enabled projects as the monitor processes hold them."""
        enabled = [project for project in self.projects if project.enabled]
        size = self.monitors.group_size(len(enabled))
        return [enabled[i:i + size] for i in range(0, len(enabled), size)]

    def first_senders(self) -> dict[str, str]:
        """Sending account -> its first enabled sending project (config order): the monitor process holding
        that project follows the account's receipts, so each account has one follower (monitors/receipts.py)."""
        first: dict[str, str] = {}
        for project in self.projects:
            if project.enabled:
                first.setdefault(project.send_account, project.name)
        return first

    @property
    def own_jids(self) -> set[str]:
        """JIDs of our own numbers: their messages are never drops."""
        return {account.jid for account in self.accounts.values()}

