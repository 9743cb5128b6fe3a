"""Logging for every wa-watchdog process: loguru to stderr, one line per event.

Under the watchdog a child's stderr is prefixed with its component name and
copied to its log file; under systemd it lands in journald. So the line itself
carries only time, level and message.
"""
from __future__ import annotations

import sys

from loguru import logger


def setup(level: str = "INFO") -> None:
    logger.remove()
    logger.add(sys.stderr, level=level, format="{time:HH:mm:ss.SSS} {level: <7} {message}", backtrace=False,
               diagnose=False)
