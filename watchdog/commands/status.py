"""`wa-watchdog status`: the control client's table of the running watchdog, with what the slices add
(watchdog/components.py `status_sections`, e.g. the drops' cluster), composed here so that the control
client names no product."""
from __future__ import annotations

import argparse

from watchdog import components
from watchdog.control.client import cmd_status as show
from watchdog.shared.config import Config


def cmd_status(config: Config, args: argparse.Namespace) -> int:
    return show(config, args, lambda running: components.status_sections(config, running))
