"""What the slices' built-in programs have in common: our own command line, and a fingerprint of what they read.

`fingerprint` holds what of the config a program reads, so a reload restarts
it only when its own part changed: adding a project starts one monitor and
leaves the bridge (and its WhatsApp session) alone. The recovery log's
settings are part of every one (each child writes to it).
"""
from __future__ import annotations

import hashlib
import sys

from watchdog.shared.config import Config


def fingerprint(config: Config, *parts: object) -> str:
    logs = (config.watchdog.recovery_log, config.watchdog.recovery_log_max_bytes)
    return hashlib.sha256(repr((*parts, logs)).encode("utf-8")).hexdigest()[:16]


def own_argv(config: Config, command: str, *args: str) -> tuple[str, ...]:
    """`<this python> -m watchdog.cli COMMAND --config ... --data-dir ... ARGS`: what the fork template can run."""
    return (sys.executable, "-m", "watchdog.cli", command, "--config", str(config.path),
            "--data-dir", str(config.data_dir), *args)
