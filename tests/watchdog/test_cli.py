"""The `wa-watchdog` entry point: --version, and a second watchdog on one data directory says what it waits for."""
from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.conftest import ROOT, Processes, wait_until
from watchdog.shared import endpoints


def test_version() -> None:
    result = subprocess.run([sys.executable, "-m", "watchdog.cli", "--version"], cwd=ROOT, capture_output=True,
                            text=True, timeout=30)
    assert (result.returncode, result.stdout.strip()) == (0, f"wa-watchdog {version('wa-watchdog')}")


ONE_BRIDGE = """
data_dir = "data"

[watchdog]
stop_timeout = 1.0
term_grace = 0.5

[accounts.main]
transport = "neonize"
phone = "27710000000"
api_port = 0
standby = false
"""


@pytest.mark.slow
def test_a_second_watchdog_says_at_once_what_it_waits_for(write_config, tmp_path: Path) -> None:
    procs = Processes(write_config(ONE_BRIDGE))
    try:
        first = procs.start("run")
        wait_until(lambda: endpoints.read(tmp_path / "data", "watchdog"), 20, message="the first watchdog")
        log = tmp_path / "second.log"
        with log.open("w") as err:
            second = procs.start("run", stderr=err)
        lock = tmp_path / "data" / "run" / "watchdog.lock"
        line = wait_until(lambda: next((l for l in log.read_text().splitlines() if "waiting up to" in l), None),
                          5, message="the second watchdog to say what it waits for")
        assert f"another wa-watchdog (pid {first.pid}) holds {lock}: waiting up to 1.5 s for it to exit" in line
        assert second.wait(20) == 1
        assert "already supervises" in log.read_text()
    finally:
        procs.stop_all()
