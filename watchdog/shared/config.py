"""System configuration: one TOML file, validated on load.

Why validate by hand instead of with a schema library: every child process
loads this file on a cold start, and the restart time of the bridge is the
number this product is judged by; dataclasses plus ~100 lines cost nothing to
import. A typo must fail at start with exit code 2 naming the key and file,
never later with a traceback.

This is the generic loader: it reads the supervisor's own tables and hands the
rest to each slice of the `Config` class it is given (config_model.py). The
class that knows every package is composed in watchdog/components.py, whose
`load` callers use; the supervision core reloads into the class of the
config it runs (`load(type(config), ...)`), so it never names a package.
"""
from __future__ import annotations

import stat
import sys
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

# The schema lives in config_model, the typed-table reader in config_tables, the checks in config_checks;
# callers import the supervisor's tables, Config and ConfigError from here.
from watchdog.shared.config_checks import ConfigChecks
from watchdog.shared.config_model import AlertConfig, Config, ConfigError, WatchdogConfig
from watchdog.shared.config_secrets import secret_keys
from watchdog.shared.config_tables import _kind

C = TypeVar("C", bound=Config)


def load(kind: type[C], path: str | Path, data_dir: str | Path | None = None) -> C:
    """Read and validate a config file into `kind` (a composed Config); raises ConfigError naming the bad key."""
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
    config = _Loader(path).build(kind, raw, Path(data_dir).resolve() if data_dir else None)
    readable = readable_secrets(config)
    if readable:
        print(f"wa-watchdog: warning: {readable}", file=sys.stderr)
    return config


def load_text(kind: type[C], text: str, path: Path, data_dir: Path | None = None) -> C:
    """A config read from `text` as if it were the file `path` (relative paths resolve beside it).

    For the copy of the last good config the watchdog keeps (watchdog/core/last_config.py).
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return _Loader(path).build(kind, raw, data_dir)


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


class _Loader(ConfigChecks):
    """Builds a Config from a parsed file: the supervisor's tables, each slice's, then what spans them."""

    def build(self, kind: type[C], raw: dict, data_dir_override: Path | None) -> C:
        known = {"data_dir", "watchdog", "alerts", "programs", *(key for part in kind.slices for key in part.keys)}
        for key in raw:
            if key not in known:
                raise self.error(key, "unknown key")
        data_dir_raw = raw.get("data_dir", "var")
        if not isinstance(data_dir_raw, str):
            raise self.error("data_dir", f"expected a string, got {_kind(data_dir_raw)}")
        data_dir = data_dir_override or (self.path.parent / data_dir_raw).resolve()
        self.check_data_dir(data_dir)

        watchdog = self.table(WatchdogConfig, raw.get("watchdog", {}), "watchdog")
        self.check_watchdog(watchdog)
        watchdog = replace(watchdog, recovery_log=data_dir / watchdog.recovery_log)
        alerts_raw = raw.get("alerts", [])
        if not isinstance(alerts_raw, list):
            raise self.error("alerts", "expected an array of tables ([[alerts]])")
        alerts = [self.table(AlertConfig, body, f"alerts[{i}]") for i, body in enumerate(alerts_raw)]
        for i, alert in enumerate(alerts):
            self.check_alert(alert, i)

        tables = {key: value for part in kind.slices for key, value in part.read(self, raw, data_dir).items()}
        config = kind(self.path, data_dir, watchdog, alerts, **tables)
        for part in kind.slices:
            config = part.check(self, config)
        self.check_ports([("watchdog.control_port", watchdog.control_host, watchdog.control_port),
                          *(port for part in kind.slices for port in part.ports(config))])
        return self.check_programs(config, raw.get("programs", []))
