"""The configuration the running watchdog loaded, for the ops commands when the file on disk is invalid.

Why: after a failed `reload` the file on disk no longer loads, while the
watchdog runs on with the configuration it loaded before. `status`,
`recoveries` and `logs` must still show that system, exactly when the
operator needs them. So the watchdog keeps a copy of the text it last
loaded (at start and after each reload that succeeded) in its run directory
(0600: it may hold tokens), and these commands read the system through it.
The data directory is `--data-dir`, or `data_dir` as far as the broken file
still says it.
"""
from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import TypeVar

from watchdog.shared import endpoints, file_modes
from watchdog.shared.config import Config, ConfigError, load_text

FILE = "config.last-good.json"
C = TypeVar("C", bound=Config)


def _file(data_dir: Path) -> Path:
    return endpoints.run_dir(data_dir) / FILE


def save(config: Config) -> None:
    """Keep the text just loaded. Read again from the file: an edit in between makes a copy that does not
    load, which `running` then says (the watchdog's own config stays what it loaded)."""
    try:
        text = config.path.read_text(encoding="utf-8")
        path = _file(config.data_dir)
        file_modes.ensure_dir(path.parent, file_modes.PRIVATE_DIR)
        file_modes.write_atomic(path, json.dumps({"path": str(config.path), "text": text}))
    except OSError:
        pass  # a full disk: the ops commands then need a valid file, nothing else depends on it


def data_dir_of(config_path: str | Path, data_dir: str | None) -> Path | None:
    """`--data-dir`, or the `data_dir` the invalid file still names (resolved as `load` does)."""
    if data_dir:
        return Path(data_dir).resolve()
    path = Path(config_path).resolve()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    value = raw.get("data_dir", "var")
    return (path.parent / value).resolve() if isinstance(value, str) else None


def running(kind: type[C], config_path: str | Path, data_dir: str | None) -> C:
    """The last good config of the watchdog on this data directory, read into `kind` (the composed Config,
    watchdog/components.py); ConfigError saying why there is none."""
    where = data_dir_of(config_path, data_dir)
    if where is None:
        raise ConfigError("the data directory is not known (pass --data-dir to read the running system from it)")
    try:
        saved = json.loads(_file(where).read_text(encoding="utf-8"))
        return load_text(kind, saved["text"], Path(saved["path"]), where)
    except FileNotFoundError:
        raise ConfigError(f"no copy of a running watchdog's configuration in {endpoints.run_dir(where)}") from None
    except PermissionError:
        raise ConfigError(f"{_file(where)} is readable only by the service user (run this as that user or root)") \
            from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"the copy {_file(where)} is unusable: {exc}") from None
