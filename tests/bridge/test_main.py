"""The bridge's API port: pinned when free; taken -> a free one only with api_port_fallback, said in one line."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bridge_support import bridge_url, start_sim
from tests.conftest import BASE_CONFIG, Processes, wait_until
from tests.bridge.test_standby import start_standby


@pytest.fixture
def taken_port() -> Iterator[int]:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    yield holder.getsockname()[1]
    holder.close()


def _bridge(procs: Processes, log: Path) -> subprocess.Popen:
    return procs.start("bridge", "--account", "main", stdout=subprocess.DEVNULL, stderr=log.open("wb"))


@pytest.mark.slow
def test_a_taken_port_falls_back_to_a_free_one_when_allowed(write_config, tmp_path: Path, taken_port: int) -> None:
    config = write_config(BASE_CONFIG.replace("api_port = 0", f"api_port = {taken_port}\napi_port_fallback = true"))
    procs = Processes(config)
    try:
        data_dir = tmp_path / "data"
        start_sim(procs, data_dir)
        log = tmp_path / "bridge.log"
        bridge = _bridge(procs, log)
        url = wait_until(lambda: bridge_url(data_dir, bridge), 15, message="the bridge to publish its API")
        assert url.startswith("http://127.0.0.1:") and not url.endswith(f":{taken_port}")
        said = [line for line in log.read_text().splitlines() if "is taken" in line]
        assert len(said) == 1 and f"api_port {taken_port} is taken: serving on free port {url.rsplit(':', 1)[1]}" \
            in said[0]
    finally:
        procs.stop_all()


@pytest.mark.slow
def test_a_taken_port_without_fallback_is_one_line_not_a_traceback(write_config, tmp_path: Path,
                                                                   taken_port: int) -> None:
    config = write_config(BASE_CONFIG.replace("api_port = 0", f"api_port = {taken_port}"))
    procs = Processes(config)
    try:
        log = tmp_path / "bridge.log"
        bridge = _bridge(procs, log)
        assert bridge.wait(30) == 1
        text = log.read_text()
        assert f"cannot serve the API on 127.0.0.1:{taken_port}: Address already in use" in text
        assert "accounts.main.api_port" in text and "Traceback" not in text
    finally:
        procs.stop_all()


@pytest.mark.slow
def test_a_standby_takes_over_the_pinned_port_of_a_killed_bridge(write_config, tmp_path: Path) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    config = write_config(BASE_CONFIG.replace("api_port = 0", f"api_port = {port}\napi_port_fallback = true"))
    procs = Processes(config)
    try:
        data_dir = tmp_path / "data"
        start_sim(procs, data_dir)
        bridge = _bridge(procs, tmp_path / "bridge.log")
        assert wait_until(lambda: bridge_url(data_dir, bridge), 15, message="the bridge") == f"http://127.0.0.1:{port}"
        standby = start_standby(procs, data_dir, tmp_path / "standby.log")
        os.kill(bridge.pid, signal.SIGKILL)
        url = wait_until(lambda: bridge_url(data_dir, standby), 15, message="the standby to take over")
        assert url == f"http://127.0.0.1:{port}"  # the same port: curl and the web app keep working
        assert "is taken" not in (tmp_path / "standby.log").read_text()
    finally:
        procs.stop_all()
