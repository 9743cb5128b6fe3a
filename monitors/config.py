"""The drops domain's configuration tables: `[[projects]]`, `[monitors]`, `[drops_api]`, `[[webhooks]]`,
`[database]`.

Read and checked by monitors/config_checks.py, declared to the loader there (`SLICE`); the composed
`Config` (watchdog/components.py) holds them as `config.projects`, `config.monitors` and so on. A new
setting of drop detection is a field of `ProjectConfig` here, its check in `config_checks.check_project`,
and its use where the project's pattern is built and applied (monitors/project.py, monitors/detect.py):
nothing outside `monitors/`. A reload restarts the project's monitor by itself (its fingerprint holds the
project).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from monitors.events import WEBHOOK_EVENTS
from watchdog.shared.config_model import ConfigError

DEFAULT_DROP_PATTERN = r"(?i)\bDR\d{6,8}\b"
DB_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class FeedbackConfig:
    auto_ack: bool = True
    template: str = "@{number} {drop} received, thank you"
    # How a drop is acknowledged (monitors/feedback.py): "reaction" (✅ on the contractor's message: no message
    # in the group, WhatsApp notifies the contractor; the default, issue 22), "message" (the template, mentioning
    # the contractor) or "reply" (the same, quoting the contractor's message).
    ack: str = "reaction"
    # Message acknowledgements ("message" or "reply") of one group wait until the group has been quiet (no newer
    # acknowledgement) this many seconds, and go out as one message naming each drop and mentioning each submitter
    # once (0: each on its own). 30 s: the pace keeps two messages to one group 30-60 s apart anyway.
    coalesce_s: float = 30.0
    # ... but go at the latest this many seconds after the oldest of them, however busy the group
    # (docs/OPERATIONS.md; equal to coalesce_s: a fixed window from the first).
    coalesce_max_s: float = 60.0
    # With several send_accounts: an account disconnected (or its bridge unreachable) this long hands sending to
    # the next; banned or logged out hands it over at once (monitors/failover.py).
    failover_after_s: float = 30.0


ACK_MODES = ("reaction", "reply", "message")


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
    # Feedback through the first of these that can send (monitors/failover.py); [send_account] when not given.
    send_accounts: list[str] = field(default_factory=list)
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
class DatabaseConfig:
    """Where the drops store lives: drops.db in data_dir (url empty, the default) or PostgreSQL."""

    url: str = ""  # postgresql://user[:password]@host[:port]/dbname[?...]
    schema: str = "wa_watchdog"


@dataclass(frozen=True)
class ClusterConfig:
    """`[cluster]`: this host's name, unique in the cluster, and its sender lease (monitors/store/lease.py)."""

    node: str
    lease_s: float = 5.0
    node_silent_s: float = 0.0  # a node not seen this long is alerted on by every other node; 0: 3 × lease_s
    # A send in doubt (another host handed it to its bridge and died before marking it, monitors/fate.py): not
    # finding that host's copy means it never went once this host's bridge has been connected this long since.
    copy_grace_s: float = 10.0
    unknown_after_s: float = 60.0  # a send in doubt still undecided after this long is `unknown` (an operator decides)

    @property
    def silent_after_s(self) -> float:
        return self.node_silent_s or 3 * self.lease_s


@dataclass(frozen=True, kw_only=True)
class DropsTables:
    """The drops domain's top-level keys, as the composed Config holds them (its `path` is the base Config's)."""

    projects: list[ProjectConfig] = field(default_factory=list)
    monitors: MonitorsConfig = field(default_factory=MonitorsConfig)
    drops_api: DropsApiConfig = field(default_factory=DropsApiConfig)
    webhooks: list[WebhookConfig] = field(default_factory=list)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    cluster: ClusterConfig | None = None  # [cluster]: this host in a cluster of hosts (monitors/cluster_config.py)

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

    def sending_groups(self) -> dict[str, list[str]]:
        """Sender lease -> the accounts it covers in a cluster (monitors/store/lease.py): the numbers linked through
        any project's `send_accounts` share one lease, named after the first of them to send for a project (config
        order; a project with one number: that number, as before). So the one host holding it sends through all
        of them: a number one project fails over to is never sent through by two hosts at once (two devices of
        one number, each pacing alone), and the projects it serves never wait on a lease split across hosts."""
        groups: list[list[str]] = []
        for project in self.projects:
            accounts = project.send_accounts or [project.send_account]
            linked = [group for group in groups if set(group) & set(accounts)]
            merged = [name for group in linked for name in group]
            groups = [group for group in groups if group not in linked]
            groups.append(list(dict.fromkeys(merged + accounts)))
        return {group[0]: group for group in groups}

    def lease_account(self, project: ProjectConfig) -> str:
        """The sender lease that fences `project`'s feedback in a cluster (see `sending_groups`)."""
        first = (project.send_accounts or [project.send_account])[0]
        return next(lease for lease, accounts in self.sending_groups().items() if first in accounts)

    def first_senders(self) -> dict[str, str]:
        """Sending account -> its first enabled sending project (config order): the monitor process holding
        that project follows the account's receipts, so each account has one follower (monitors/receipts.py)."""
        first: dict[str, str] = {}
        for project in self.projects:
            if project.enabled:
                for account in project.send_accounts:  # a second number's receipts are followed too
                    first.setdefault(account, project.name)
        return first
