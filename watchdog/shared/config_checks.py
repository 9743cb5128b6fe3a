"""Checks of the configuration that types alone cannot express: ranges, formats, references, uniqueness.

The generic ones (ports, tokens, origins, supervision knobs, the data directory) and the supervisor's own
tables; each package checks its tables with these (bridge/config_checks.py, monitors/config.py)."""
from __future__ import annotations

import ipaddress
from dataclasses import replace
from pathlib import Path

from watchdog.shared import alert_rules, programs
from watchdog.shared.config_model import (MIN_HEARTBEAT, MIN_LOG_BYTES, MIN_RSS_LIMIT_MB, ORIGIN, AlertConfig, Config,
                                          WatchdogConfig)
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


class ConfigChecks(TableReader):
    """The cross-field checks of one config file, each raising ConfigError naming the key."""

    def check_positive(self, value: float, key: str) -> None:
        if value <= 0:
            raise self.error(key, f"must be more than 0, got {value:g}")

    def check_supervision(self, watchdog_sec: float, rss_limit_mb: int, key: str) -> None:
        """Per-component supervision knobs: watchdog_sec 0 = no heartbeat check, rss_limit_mb 0 = no limit."""
        if watchdog_sec != 0 and watchdog_sec < MIN_HEARTBEAT:
            raise self.error(f"{key}.watchdog_sec",
                             f"must be 0 (off) or at least {MIN_HEARTBEAT:g} seconds, got {watchdog_sec:g}")
        if rss_limit_mb != 0 and rss_limit_mb < MIN_RSS_LIMIT_MB:
            raise self.error(f"{key}.rss_limit_mb", f"must be 0 (no limit) or at least {MIN_RSS_LIMIT_MB}, got {rss_limit_mb}")

    def check_port(self, port: int, key: str) -> None:
        if not 0 <= port <= 65535:
            raise self.error(key, f"port {port} out of range 0-65535 (0 = any free port)")

    def check_data_dir(self, data_dir: Path) -> None:
        if data_dir in SYSTEM_DIRS:
            raise self.error("data_dir", f"{data_dir} is a system directory; the data directory must be the "
                                         "service's own, e.g. /var/lib/wa-watchdog")

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

    def check_programs(self, config: Config, raw: object) -> Config:
        declared = programs.parse(raw, self.error, self.path.parent)
        programs.check_names(declared, config.builtin_names(), self.error)
        return replace(config, programs=declared)

    def check_no_repeats(self, values: list, key: str, what: str = "") -> None:
        """A list that names things (groups, rules, participants) holds each once."""
        seen: dict[object, int] = {}
        for i, value in enumerate(values):
            if value in seen:
                where = f"{key}[{i}].{what}" if what else f"{key}[{i}]"
                raise self.error(where, f"{value!r} repeats {key}[{seen[value]}]" + (f".{what}" if what else ""))
            seen[value] = i

    def check_ports(self, ports: list[tuple[str, str, int]]) -> None:
        """Every fixed port (0 = any free port) once: two listeners on one port end in `Address already in use`."""
        taken: dict[int, str] = {}
        for key, _, port in ports:
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

