"""The bridge's configuration tables: `[accounts.NAME]` (one WhatsApp number each) and `[sim]`.

Read and checked by bridge/config_checks.py, declared to the loader there (`SLICE`); the composed
`Config` (watchdog/components.py) holds them as `config.accounts` and `config.sim`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from bridge.pace import PaceConfig
from watchdog.shared.config_model import ConfigError

GROUP_JID = re.compile(r"^[0-9]+(-[0-9]+)?@g\.us$")
PHONE = re.compile(r"^[0-9]{6,15}$")
MIN_TRAFFIC_INTERVAL = 0.01  # seconds between demo posts: below this the simulator floods its own queue


def account_component(account: str) -> str:
    """The program name of an account's bridge (`bridge:main`): its row, its log, its recovery records."""
    return f"bridge:{account}"


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
    url: str = ""  # a simulator already running (http://127.0.0.1:PORT): used instead of starting one (a cluster)
    # The sim transport sends as neonize 0.5.2 does: it cannot choose message ids, the simulator assigns each send its
    # own (a resend after a lost answer is a second message), and it requests no history. For tests of what real
    # WhatsApp through neonize would do.
    server_ids: bool = False


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
    follow_groups: list[str] = field(default_factory=list)  # default: its projects' groups (monitors/config_checks.py)
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
    # WhatsApp's rate-overlimit (429) pauses the account this long, doubling with each further one (max 15 min).
    send_pause_s: float = 30.0
    # The pace of sending (bridge/pace.py; docs/OPERATIONS.md, "Choosing the pace").
    pace: PaceConfig = field(default_factory=PaceConfig)

    @property
    def component(self) -> str:
        return account_component(self.name)

    @property
    def jid(self) -> str:
        return f"{self.phone}@s.whatsapp.net"


@dataclass(frozen=True, kw_only=True)
class BridgeTables:
    """The bridge's top-level keys, as the composed Config holds them (its `path` is the base Config's)."""

    sim: SimConfig | None = None
    accounts: dict[str, AccountConfig] = field(default_factory=dict)

    def account(self, name: str) -> AccountConfig:
        try:
            return self.accounts[name]
        except KeyError:
            raise ConfigError(f"{self.path}: no account named {name!r} (known: {', '.join(self.accounts)})") from None

    @property
    def own_jids(self) -> set[str]:
        """JIDs of our own numbers: their messages are never drops."""
        return {account.jid for account in self.accounts.values()}
