"""drops-api restarted on a full disk (a small tmpfs as the data dir): it cannot publish run/drops-api.json
(ENOSPC), and serves anyway; the URL is published once space is back. Exiting for it would only put the API in
the watchdog's crash-loop backoff, and a restart cannot free space."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.bridge_support import call
from tests.conftest import ROOT, Processes, wait_until
from tests.host_faults import SmallDisk, small_disk
from tests.monitors.test_drops_api import AUTH, api_config
from tests.pg import free_port
from watchdog.shared import endpoints


def _api_in(disk: SmallDisk, config_path: Path, procs: Processes) -> subprocess.Popen:
    proc = subprocess.Popen(disk.command(sys.executable, "-m", "watchdog.cli", "drops-api", "--config",
                                         str(config_path)),
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    procs.started.append(proc)  # ended by pid with the others (nsenter execs the command)
    return proc


def _published_by(disk: SmallDisk, proc: subprocess.Popen) -> str | None:
    record = endpoints.read(disk.outside, "drops-api")
    return record["endpoints"]["api"] if record and record["pid"] == proc.pid else None


def _serving(url: str) -> bool:
    try:
        return call("GET", f"{url}/api/health", headers=AUTH)[0] == 200
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_drops_api_restarted_on_a_full_disk_serves_and_publishes_its_url_once_space_is_back(write_config) -> None:
    port = free_port()
    config_path = write_config(api_config(extra=f"port = {port}\n"))
    url = f"http://127.0.0.1:{port}"
    procs = Processes(config_path)
    try:
        with small_disk(config_path.parent / "data", "8m") as disk:
            api = _api_in(disk, config_path, procs)
            assert wait_until(lambda: _published_by(disk, api), 30, message="drops-api's URL") == url
            os.kill(api.pid, signal.SIGKILL)  # a crash: the old record stays, naming the dead pid
            api.wait(10)
            filler = disk.fill()
            api = _api_in(disk, config_path, procs)
            wait_until(lambda: api.poll() is not None or _serving(url), 30, message="the restarted drops-api")
            assert api.poll() is None, "drops-api exited on the full disk"
            assert _published_by(disk, api) is None  # up, its URL not written: no space
            filler.unlink()
            freed = time.monotonic()
            assert wait_until(lambda: _published_by(disk, api), 10, message="the URL published, space back") == url
            print(f"published {time.monotonic() - freed:.2f} s after space returned")
            assert api.poll() is None  # it never exited
    finally:
        procs.stop_all()
