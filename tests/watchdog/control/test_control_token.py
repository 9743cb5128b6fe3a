"""Other local users and the control API: a restart needs run/control.token (0600), which the CLI reads itself;
a config other users can write is refused, one they can read while it holds secrets is warned about."""
from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bridge_support import call
from tests.conftest import BASE_CONFIG
from tests.watchdog.control.test_control_client_live import ServerThread, cli
from watchdog.control import token as control_token
from watchdog.shared import endpoints
from watchdog.shared.config import WatchdogConfig
from watchdog.shared.exitcodes import EXIT_CONFIG


@pytest.fixture
def guarded(data_dir: Path) -> Iterator[ServerThread]:
    thread = ServerThread(WatchdogConfig(), restart_token=control_token.generate(data_dir))
    endpoints.publish(data_dir, "watchdog", {"control": thread.url})
    yield thread
    thread.stop()


def test_a_restart_without_the_token_is_refused_and_the_cli_sends_it(config_path: Path, data_dir: Path,
                                                                      guarded: ServerThread) -> None:
    token_file = control_token.path(data_dir)
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    status, body = call("POST", f"{guarded.url}/restart/bridge:main", {})
    assert status == 401 and "run/control.token" in body["error"]
    assert call("GET", f"{guarded.url}/status")[0] == 200  # reading stays open on loopback
    done = cli(config_path, "restart", "bridge:main")
    assert done.returncode == 0, done.stderr
    assert guarded.provider.restarted == ["bridge:main"]


def test_a_stale_token_is_named(config_path: Path, data_dir: Path, guarded: ServerThread) -> None:
    control_token.generate(data_dir)  # as if another watchdog had started since
    done = cli(config_path, "restart", "bridge:main")
    assert done.returncode == 1 and str(control_token.path(data_dir)) in done.stderr
    assert guarded.provider.restarted == []


def test_a_config_others_can_write_is_refused_with_exit_2(write_config) -> None:
    path = write_config()
    path.chmod(0o666)
    done = cli(path, "status")
    assert done.returncode == EXIT_CONFIG
    assert f"{path}: the config file {path} is writable by other users (mode 0666)" in done.stderr
    assert "chmod o-w" in done.stderr and "Traceback" not in done.stderr


def test_a_readable_config_with_secrets_is_warned_about_and_a_private_one_is_not(write_config) -> None:
    path = write_config(BASE_CONFIG.replace('api_port = 0\n', 'api_port = 0\napi_token = "s3cret"\n', 1))
    path.chmod(0o644)
    assert (f"{path} is readable by every user (mode 0644) and holds secrets (accounts.main.api_token)"
            in cli(path, "status").stderr)
    path.chmod(0o600)
    assert "readable by every user" not in cli(path, "status").stderr
