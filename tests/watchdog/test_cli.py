"""The `wa-watchdog` entry point: --version, and a second watchdog on one data directory says what it waits for."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.conftest import BASE_CONFIG, ROOT, Processes, wait_until
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


def cli(config_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "watchdog.cli", args[0], "--config", str(config_path), *args[1:]],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_after_a_failed_reload_the_operator_still_sees_the_running_system(write_config, tmp_path: Path) -> None:
    config_path = write_config(BASE_CONFIG)
    procs = Processes(config_path)
    try:
        watchdog = procs.start("run")
        wait_until(lambda: (up := cli(config_path, "status")).returncode == 0 and "bridge:main" in up.stdout,
                   60, 0.5, "the watchdog answering")
        config_path.write_text(BASE_CONFIG.replace("control_port = 0", "control_port = 0\nretsart_delay = 1"))
        refused = cli(config_path, "reload")
        assert refused.returncode == 2 and "watchdog.retsart_delay" in refused.stderr, refused.stderr
        watchdog.send_signal(signal.SIGHUP)  # systemctl reload: the watchdog refuses it too, and keeps running
        log = tmp_path / "data" / "recoveries.jsonl"
        wait_until(lambda: '"event": "reload"' in log.read_text(), 20, message="the refused reload logged")
        seen = {command[0]: cli(config_path, *command) for command in (["status"], ["recoveries"], ["logs", "watchdog"])}
        for command, done in seen.items():
            assert done.returncode == 0, done.stderr
            assert f"wa-watchdog {command}: warning: the config on disk is invalid" in done.stderr
            assert "watchdog.retsart_delay" in done.stderr  # names the key
        assert "bridge:main" in seen["status"].stdout
        assert "config reloaded (SIGHUP): invalid" in seen["recoveries"].stdout
        assert "reload (SIGHUP)" in seen["logs"].stdout
        config_path.write_text("data_dir = [")  # not even TOML: the data directory must be given
        lost = cli(config_path, "status")
        assert lost.returncode == 2 and "pass --data-dir" in lost.stderr and "Traceback" not in lost.stderr
        found = cli(config_path, "status", "--data-dir", str(tmp_path / "data"))
        assert found.returncode == 0 and "bridge:main" in found.stdout, found.stderr
        assert cli(config_path, "drops").returncode == 2  # what is not about the running system still wants the file
    finally:
        procs.stop_all()


def test_the_readme_command_table_lists_every_command_in_one_table() -> None:
    """A blank line inside a Markdown table ends it: the rows after it render as text."""
    from watchdog.cli import COMMANDS
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = lines.index("| command | what it does |")
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append(line)
    missing = [name for name in COMMANDS if not any(f"`wa-watchdog {name}" in row for row in table)]
    assert missing == [], f"not in README.md's command table: {missing}"


def test_the_production_example_names_its_config_in_every_command() -> None:
    """Run from the code directory without --config, a command falls back to the demo config (var/demo)."""
    header = [line for line in (ROOT / "conf/prod.example.toml").read_text(encoding="utf-8").splitlines()
              if line.startswith("#") and "wa-watchdog " in line and "--" in line]
    assert header and all("--config /etc/wa-watchdog/config.toml" in line for line in header), header
