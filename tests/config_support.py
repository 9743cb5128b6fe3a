"""The config tests' one audit: BASE_CONFIG with one change either loads or fails naming its key and problem.

Each package's tests hold the cases of its own tables (tests/bridge/test_config.py, tests/monitors/test_config.py,
tests/watchdog/shared/test_config.py for the supervisor's).
"""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import BASE_CONFIG, ROOT
from watchdog.components import load
from watchdog.shared.config import ConfigError

SECOND_ACCOUNT = '\n[accounts.other]\ntransport = "sim"\nphone = "27710000009"\napi_port = 0\n'


def check_setting(write_config: Callable[..., Path], old: str, new: str, key: str | None, problem: str | None) -> None:
    """BASE_CONFIG with `old` replaced by `new`: loads when `key` is None, else fails naming `key` and `problem`."""
    assert old in BASE_CONFIG, old
    text = BASE_CONFIG.replace(old, new, 1)
    if "[accounts.other]" in text or "main account" in text:  # two accounts: each project names its own
        text = text.replace('name = "lawley"', 'name = "lawley"\nlisten_account = "main"').replace(
            'name = "mohadin"', 'name = "mohadin"\nlisten_account = "main"')
    path = write_config(text)
    if key is None:
        load(path)
        return
    with pytest.raises(ConfigError) as error:
        load(path)
    assert f"{path}: {key}: " in str(error.value)
    assert problem in str(error.value)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "watchdog.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)
