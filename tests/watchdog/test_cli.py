"""The `wa-watchdog` entry point: --version, and a second watchdog on one data directory says what it waits for."""
from __future__ import annotations

import os
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


def test_without_a_config_outside_the_source_tree_the_error_says_what_to_pass(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "WA_WATCHDOG_CONFIG"}
    for command in ("check", "run", "status"):
        result = subprocess.run([sys.executable, "-m", "watchdog.cli", command], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 2 and result.stdout == "", result.stderr
        assert result.stderr == (f"wa-watchdog {command}: configuration error: no --config given and the default "
                                 f"config {tmp_path}/conf/demo.toml does not exist: pass --config FILE or set "
                                 "WA_WATCHDOG_CONFIG (conf/demo.toml in a checkout of the source is the demo, "
                                 "conf/prod.example.toml the production example)\n")
    assert list(tmp_path.iterdir()) == []  # nothing created here


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
