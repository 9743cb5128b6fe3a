"""`wa-watchdog run`: the supervision core, handed the product it runs (it names none of it itself)."""
from __future__ import annotations

import argparse

from watchdog import components
from watchdog.core.arbiter import supervise
from watchdog.shared.config import Config


def cmd_run(config: Config, args: argparse.Namespace) -> int:
    return supervise(config, components.builtin_programs, components.console_views(), components.preload())
