"""System configuration: one TOML file, validated on load.

Why validate by hand instead of with a schema library: every child process
loads this file on a cold start, and the restart time of the bridge is the
number this product is judged by; dataclasses plus ~100 lines cost nothing to
import. A typo must fail at start with exit code 2 naming the key and file,
never later with a traceback.
"""
from __future__ import annotations

import stat
import sys
import tomllib
from dataclasses import replace
from pathlib import Path

# Each package's alert rules, registered at import (watchdog/shared/alert_rules.py): `[[alerts]] rules` and
# their default are checked against them.
from bridge import alert_rules as bridge_rules  # noqa: F401
from monitors import alert_rules as drops_rules  # noqa: F401
# The schema lives in config_model, the typed-table reader in config_tables, the checks in config_checks;
# callers keep importing everything from here.
from watchdog.shared.config_checks import ConfigChecks, project_key
from watchdog.shared.config_secrets import secret_keys
from watchdog.shared.config_model import (AUTO, DB_SCHEMA_NAME, DEFAULT_DROP_PATTERN, GROUP_JID,  # noqa: F401
                                   MIN_HEARTBEAT, MIN_LOG_BYTES, MIN_RSS_LIMIT_MB, MIN_TRAFFIC_INTERVAL, NAME,
                                   ORIGIN, PHONE, WEBHOOK_EVENTS, WEBHOOK_NAME, AccountConfig, AlertConfig, Config,
                                   ConfigError, DatabaseConfig, DropsApiConfig, FeedbackConfig, MediaLimitsConfig,
                                   MonitorsConfig, ProbeConfig, ProjectConfig, SimConfig, SimGroupConfig,
                                   TrafficConfig, WatchdogConfig, WebhookConfig, monitor_component)
from watchdog.shared.config_tables import _kind


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
    check_permissions(path)
    config = _Loader(path).build(raw, Path(data_dir).resolve() if data_dir else None)
    readable = readable_secrets(config)
    if readable:
        print(f"wa-watchdog: warning: {readable}", file=sys.stderr)
    return config


def load_text(text: str, path: Path, data_dir: Path | None = None) -> Config:
    """A config read from `text` as if it were the file `path` (relative paths resolve beside it).

    For the copy of the last good config the watchdog keeps (watchdog/core/last_config.py).
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return _Loader(path).build(raw, data_dir)


def readable_secrets(config: Config) -> str:
    """'' unless other users can read a config that holds secrets; else what to say, naming the keys."""
    mode = stat.S_IMODE(config.path.stat().st_mode)
    keys = secret_keys(config) if mode & stat.S_IROTH else []
    if not keys:
        return ""
    return (f"{config.path} is readable by every user (mode {mode:04o}) and holds secrets ({', '.join(keys)}): "
            f"chown root:wa-watchdog {config.path} && chmod 0640 {config.path}")


def check_permissions(path: Path) -> None:
    """Refuse a config that other local users can change (secrets in one they can read: readable_secrets).

    Why refuse: whoever can edit the config decides what the bridges read and send (media_dirs,
    webhook URLs), and a restart applies it. A directory others can write lets them replace the file.
    """
    for target, what in ((path, "file"), (path.parent, "directory")):
        mode = target.stat().st_mode
        if mode & stat.S_IWOTH and not (what == "directory" and mode & stat.S_ISVTX):
            raise ConfigError(f"{path}: the config {what} {target} is writable by other users (mode "
                              f"{stat.S_IMODE(mode):04o}); any local user could change what runs and what is sent: "
                              f"chmod o-w {target}")


def _cluster(reader: ConfigChecks, raw: object, database: DatabaseConfig) -> object:
    """[cluster] (issue 21), read by its own module, imported only by configs that have one; moves to
    monitors/config.py with the config split."""
    from monitors.cluster_config import read_cluster
    return read_cluster(reader, raw, database)


class _Loader(ConfigChecks):
    """Builds a Config from a parsed file: each table read, then checked across tables."""

    def build(self, raw: dict, data_dir_override: Path | None) -> Config:
        known = {"data_dir", "watchdog", "sim", "accounts", "projects", "alerts", "database", "programs", "drops_api",
                 "webhooks", "monitors", "cluster"}
        for key in raw:
            if key not in known:
                raise self.error(key, "unknown key")
        data_dir_raw = raw.get("data_dir", "var")
        if not isinstance(data_dir_raw, str):
            raise self.error("data_dir", f"expected a string, got {_kind(data_dir_raw)}")
        data_dir = data_dir_override or (self.path.parent / data_dir_raw).resolve()
        self.check_data_dir(data_dir)

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
        monitors = self.table(MonitorsConfig, raw.get("monitors", {}), "monitors")
        per_process = monitors.projects_per_process
        if per_process != AUTO and (isinstance(per_process, str) or per_process < 1):
            raise self.error("monitors.projects_per_process", f'must be 1 or more, or "auto"; got {per_process!r}')
        config = Config(self.path, data_dir, watchdog, sim, accounts, projects, alerts, database=database,
                        drops_api=drops_api, webhooks=webhooks, monitors=monitors,
                        cluster=_cluster(self, raw["cluster"], database) if "cluster" in raw else None)
        return self.check_programs(config, raw.get("programs", []))
