"""Config validation: a bad file fails at start with exit code 2, naming the key and the file."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BASE_CONFIG, ROOT
from watchdog.config import ConfigError, load


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "watchdog.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)


def test_base_config_loads_with_paths_under_data_dir(config_path: Path) -> None:
    config = load(config_path)
    data = config_path.parent / "data"
    assert config.data_dir == data
    main = config.accounts["main"]
    assert main.store == data / "accounts/main/messages.db"
    assert main.session_dir == data / "accounts/main/session"
    assert main.media_dirs == [data / "media"]
    assert config.watchdog.recovery_log == data / "recoveries.jsonl"
    # an account follows the groups of the projects it listens for
    assert main.follow_groups == sorted({g for p in config.projects for g in p.groups})
    assert [p.listen_account for p in config.projects] == ["main", "main"]
    assert [p.send_account for p in config.projects] == ["main", "main"]


def test_data_dir_override(config_path: Path, tmp_path: Path) -> None:
    config = load(config_path, tmp_path / "elsewhere")
    assert config.data_dir == tmp_path / "elsewhere"
    assert config.accounts["main"].store == tmp_path / "elsewhere/accounts/main/messages.db"


@pytest.mark.parametrize("change, key, problem", [
    (("api_port = 0", "api_prot = 0"), "accounts.main.api_prot", "unknown key"),
    (("api_port = 0", 'api_port = "eighty"'), "accounts.main.api_port", "expected an integer, got a string"),
    (("api_port = 0", "api_port = 70000"), "accounts.main.api_port", "out of range"),
    (('phone = "27710000000"', 'phone = "+27 71"'), "accounts.main.phone", "digits only"),
    (('transport = "sim"', 'transport = "carrier-pigeon"'), "accounts.main.transport", "must be 'sim' or 'neonize'"),
    (('name = "lawley"\n', ""), "projects[0].name", "missing required value"),
    (('groups = ["120363000000000001@g.us"]', 'groups = ["lawley"]'), "projects[0].groups[0]", "not a group JID"),
    (("[watchdog]", "[watchdgo]"), "watchdgo", "unknown key"),
    (("control_port = 0", "control_port = true"), "watchdog.control_port", "expected an integer, got a boolean"),
    (("api_port = 0", 'api_port = 0\nstandby = "yes"'), "accounts.main.standby", "expected true or false, got a string"),
    (("api_port = 0", 'api_port = 0\napi_host = "0.0.0.0"'), "accounts.main.api_token", "required when api_host is not loopback"),
])
def test_bad_values_name_the_key(write_config, change: tuple[str, str], key: str, problem: str) -> None:
    old, new = change
    assert old in BASE_CONFIG
    path = write_config(BASE_CONFIG.replace(old, new, 1))
    with pytest.raises(ConfigError) as error:
        load(path)
    assert f"{path}: {key}: " in str(error.value)
    assert problem in str(error.value)


def test_project_pattern_and_template_are_checked(write_config) -> None:
    path = write_config(BASE_CONFIG + '\n[[projects]]\nname = "x"\ngroups = ["1@g.us"]\npattern = "DR(["\n')
    with pytest.raises(ConfigError, match=r"projects\[2\]\.pattern: not a valid regular expression"):
        load(path)
    path = write_config(BASE_CONFIG + '\n[[projects]]\nname = "x"\ngroups = ["1@g.us"]\n'
                        'feedback = { template = "{contractor} {drop}" }\n')
    with pytest.raises(ConfigError, match=r"projects\[2\]\.feedback\.template: unknown placeholder 'contractor'"):
        load(path)


def test_project_accounts_must_exist(write_config) -> None:
    path = write_config(BASE_CONFIG + '\n[[projects]]\nname = "x"\ngroups = ["1@g.us"]\nsend_account = "sender"\n')
    with pytest.raises(ConfigError, match=r"projects\[2\]\.send_account: no account named 'sender'"):
        load(path)


def test_cli_exits_2_naming_key_and_file_without_traceback(write_config) -> None:
    path = write_config(BASE_CONFIG.replace("api_port = 0", "api_prot = 0"))
    for command in (["bridge", "--account", "main"], ["monitor", "--project", "lawley"], ["sim"], ["run"], ["status"]):
        result = run_cli(*command, "--config", str(path))
        assert result.returncode == 2, (command, result.stderr)
        assert f"{path}: accounts.main.api_prot: unknown key" in result.stderr
        assert "Traceback" not in result.stderr


def test_cli_reports_invalid_toml_and_missing_file(write_config, tmp_path: Path) -> None:
    path = write_config("data_dir = \n")
    result = run_cli("sim", "--config", str(path))
    assert result.returncode == 2 and "not valid TOML" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("sim", "--config", str(tmp_path / "absent.toml"))
    assert result.returncode == 2 and "config file not found" in result.stderr


def test_unknown_account_is_a_config_error(config_path: Path) -> None:
    result = run_cli("bridge", "--account", "nobody", "--config", str(config_path))
    assert result.returncode == 2
    assert "no account named 'nobody'" in result.stderr


@pytest.mark.parametrize("name", ["demo.toml", "prod.example.toml"])
def test_shipped_configs_are_valid(name: str) -> None:
    config = load(ROOT / "conf" / name)
    assert config.accounts and config.projects
