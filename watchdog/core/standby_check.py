"""Is a warm standby older than the config file it was started with? Then it must not take over.

Why: the standby loads the config when it starts and then waits, possibly for
days. Promoting it after the config changed would run the old config, and an
operator's restart would seem to ignore the edit (it took two restarts). So a
standby whose start predates the config file's last change is stopped instead
of promoted, and the component starts cold with the file as it is now.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from watchdog.core.child import ChildProcess
from watchdog.shared import clock


def config_path(argv: Sequence[str]) -> Path | None:
    """The `--config` file of a `wa-watchdog` command line (None if it has none)."""
    args = list(argv)
    if "--config" in args and args.index("--config") + 1 < len(args):
        return Path(args[args.index("--config") + 1])
    return None


def is_stale(standby: ChildProcess, argv: Sequence[str]) -> bool:
    """True if the config file changed after `standby` was started (and so after it read the file)."""
    path = config_path(argv)
    if path is None:
        return False
    try:
        changed = path.stat().st_mtime
    except OSError:
        return False  # a config that vanished: the cold start would fail too; keep what works
    started = clock.now_s() - (time.monotonic() - standby.started_at)
    return changed > started
