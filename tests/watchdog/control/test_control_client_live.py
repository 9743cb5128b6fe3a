"""`wa-watchdog status` / `restart` as real subprocesses against a real control server."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import BASE_CONFIG, ROOT
from tests.watchdog.control.test_control import COMPONENTS, Provider
from watchdog.shared import endpoints
from watchdog.shared.config import WatchdogConfig
from watchdog.control.api import start_control_server
from watchdog.core.metrics import Metrics


class ServerThread:
    """A control server on its own event loop in a thread, so the CLI under test can be a blocking subprocess."""

    def __init__(self, config: WatchdogConfig, restart_token: str = "") -> None:
        self.provider = Provider()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner, self.url = asyncio.run_coroutine_threadsafe(
            start_control_server(config, self.provider.status, self.provider.restart, Metrics(), self.provider.reload,
                                 self.provider.config_info, restart_token), self.loop
        ).result(timeout=10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def server(data_dir: Path) -> Iterator[ServerThread]:
    thread = ServerThread(WatchdogConfig())
    endpoints.publish(data_dir, "watchdog", {"control": thread.url})
    yield thread
    thread.stop()


def cli(config_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "watchdog.cli", args[0], "--config", str(config_path), *args[1:]],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)


def test_status_prints_a_table_and_stable_json(config_path: Path, server: ServerThread) -> None:
    table = cli(config_path, "status")
    assert table.returncode == 0, table.stderr
    config_line, blank, header, bridge, monitor = table.stdout.splitlines()[:5]
    assert config_line == "config /etc/wa-watchdog/config.toml sha256 3f2a9c01d4e5 loaded 2m05s ago (1 reload)"
    assert blank == ""
    assert header.split()[:5] == ["NAME", "PID", "STATE", "HEALTHY", "UPTIME"]
    assert bridge.split()[:8] == ["bridge:main", "4242", "running", "yes", "12s", "2", "SIGKILL", "4244"]
    assert monitor.split()[7] == "-"  # no standby
    assert bridge.endswith("api=http://127.0.0.1:8080")
    assert monitor.split()[:7] == ["monitor:lawley", "4243", "running", "yes", "30s", "0", "-"]
    assert "bridge:main: connected" in table.stdout

    as_json = cli(config_path, "status", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == COMPONENTS


def test_restart_asks_the_watchdog(config_path: Path, server: ServerThread) -> None:
    done = cli(config_path, "restart", "bridge:main")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "restarted bridge:main: pid 4242 -> 5000 (starting)"
    assert server.provider.restarted == ["bridge:main"]

    unknown = cli(config_path, "restart", "bridge:nope")
    assert unknown.returncode == 1
    assert "no component named bridge:nope" in unknown.stderr and "Traceback" not in unknown.stderr


@pytest.mark.slow
def test_not_running_is_a_clear_message(config_path: Path, data_dir: Path) -> None:
    published = data_dir / "run" / "watchdog.json"
    missing = cli(config_path, "status")
    assert missing.returncode == 1
    assert f"watchdog is not running (no control endpoint in {published})" in missing.stderr

    stale = ServerThread(WatchdogConfig())  # a watchdog that published its URL and then died
    endpoints.publish(data_dir, "watchdog", {"control": stale.url})
    stale.stop()
    refused = cli(config_path, "restart", "bridge:main")
    assert refused.returncode == 1
    assert "watchdog is not running" in refused.stderr and stale.url in refused.stderr
    assert "Traceback" not in refused.stderr


def test_the_token_from_the_config_is_sent(write_config: Callable[..., Path], data_dir: Path) -> None:
    server = ServerThread(WatchdogConfig(control_token="s3cret"))
    try:
        endpoints.publish(data_dir, "watchdog", {"control": server.url})
        good = write_config(BASE_CONFIG.replace("control_port = 0", 'control_port = 0\ncontrol_token = "s3cret"'))
        assert cli(good, "status", "--json").returncode == 0
        bad = write_config(BASE_CONFIG.replace("control_port = 0", 'control_port = 0\ncontrol_token = "nope"'),
                           name="bad.toml")
        refused = cli(bad, "status")
        assert refused.returncode == 1 and "control_token" in refused.stderr
    finally:
        server.stop()


def test_reload_asks_the_watchdog_and_exits_2_when_it_refuses_the_config(config_path: Path,
                                                                          server: ServerThread) -> None:
    done = cli(config_path, "reload")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"reloaded {config_path} (sha256 {'ab' * 6}): added monitor:new"
    server.provider.reload_error = f"{config_path}: programs.web.argv: expected a non-empty array of strings"
    refused = cli(config_path, "reload")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "the running configuration stays" in refused.stderr and "programs.web.argv" in refused.stderr
    assert server.provider.reloads == ["operator", "operator"]
