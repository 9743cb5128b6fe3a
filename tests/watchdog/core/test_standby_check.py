"""A warm standby older than the config file is not promoted: one operator restart applies a config change."""
from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.conftest import Processes, wait_until
from tests.watchdog.control.test_control_client_live import cli
from tests.watchdog.core.test_standby import up_with_standby, waiting
from tests.watchdog.test_system import alive


@pytest.mark.slow
def test_a_restart_after_a_config_edit_starts_cold_instead_of_promoting_the_old_standby(
        procs: Processes, config_path, data_dir) -> None:
    procs.start("run", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bridge = wait_until(lambda: up_with_standby(data_dir), 40, message="the system up with a standby")["bridge:main"]
    active, standby = bridge["pid"], bridge["standby_pid"]
    wait_until(lambda: waiting(data_dir, standby), 15, message="the standby waiting on the session lock")

    config_path.write_text(config_path.read_text(encoding="utf-8") + "\n# edited by an operator\n", encoding="utf-8")
    os.utime(config_path, (time.time() + 1, time.time() + 1))  # newer than the standby, whatever the clock grain
    done = cli(config_path, "restart", "bridge:main")
    assert done.returncode == 0, done.stderr
    new = wait_until(lambda: (c := up_with_standby(data_dir, (active, standby))) and c["bridge:main"], 40,
                     message="a cold-started bridge and a new standby")
    assert new["pid"] not in (active, standby)
    assert not alive(standby) and not alive(active)
