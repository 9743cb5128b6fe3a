"""Config validation: a bad file fails at start with exit code 2, naming the key and the file."""
from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.config_support import check_setting, run_cli
from tests.conftest import BASE_CONFIG, ROOT
from watchdog.components import load
from watchdog.shared import config
from watchdog.shared.config import ConfigError, readable_secrets
from watchdog.shared.config_model import ConfigSlice


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


@pytest.mark.parametrize("change, key, problem", [
    (("api_port = 0", "api_prot = 0"), "accounts.main.api_prot", "unknown key"),
    (("api_port = 0", 'api_port = "eighty"'), "accounts.main.api_port", "expected an integer, got a string"),
    (("api_port = 0", "api_port = 70000"), "accounts.main.api_port", "out of range"),
    (('phone = "27710000000"', 'phone = "+27 71"'), "accounts.main.phone", "digits only"),
    (('transport = "sim"', 'transport = "carrier-pigeon"'), "accounts.main.transport", "must be 'sim' or 'neonize'"),
    (('name = "lawley"\n', ""), "projects[0].name", "missing required value"),
    (('groups = ["120363000000000001@g.us"]', 'groups = ["lawley"]'), "projects[lawley].groups[0]", "not a group JID"),
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


@pytest.mark.slow
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


@pytest.mark.parametrize("name", ["demo.toml", "prod.example.toml"])
def test_shipped_configs_are_valid(name: str) -> None:
    config = load(ROOT / "conf" / name)
    assert config.accounts and config.projects


# Every numeric and list setting: range, uniqueness and type, one case per rule (the change, the key, the problem).
AUDIT = [
    # [watchdog]
    ("control_port = 0", "control_port = 65536", "watchdog.control_port", "out of range"),
    ("control_port = 0", "control_port = 0\nterm_grace = -1", "watchdog.term_grace", "0 or more"),
    ("control_port = 0", "control_port = 0\nstop_timeout = 0", "watchdog.stop_timeout", "more than 0"),
    ("control_port = 0", "control_port = 0\nbackoff_initial = 0", "watchdog.backoff_initial", "more than 0"),
    ("control_port = 0", "control_port = 0\nbackoff_max = 0.01", "watchdog.backoff_max", "at least backoff_initial"),
    ("control_port = 0", "control_port = 0\nbackoff_reset_after = -5", "watchdog.backoff_reset_after", "more than 0"),
    ("control_port = 0", "control_port = 0\ncrash_loop_exits = 0", "watchdog.crash_loop_exits", "more than 0"),
    ("control_port = 0", "control_port = 0\ncrash_loop_exits = 2.5", "watchdog.crash_loop_exits", "expected an integer"),
    ("control_port = 0", "control_port = 0\ncrash_loop_window = 0", "watchdog.crash_loop_window", "more than 0"),
    ("control_port = 0", "control_port = 0\nrecovery_log_max_bytes = 10", "watchdog.recovery_log_max_bytes",
     "at least 4096"),
    ("control_port = 0", "control_port = 0\nchild_log_max_bytes = 0", "watchdog.child_log_max_bytes", "at least 4096"),
    ("control_port = 0", "control_port = 0\nstart_timeout = 0", "watchdog.start_timeout", "more than 0"),
    ("control_port = 0", "control_port = 0\noverload_grace = -1", "watchdog.overload_grace", "more than 0"),
    ("control_port = 0", "control_port = 0\nmax_starting = -1", "watchdog.max_starting", "0 (twice the CPU count)"),
    ("control_port = 0", "control_port = 0\nmax_starting = 1.5", "watchdog.max_starting", "expected an integer"),
    ("control_port = 0", "control_port = 0\nrestart_rate = 0", "watchdog.restart_rate", "more than 0"),
    ("control_port = 0", "control_port = 0\nprocess_check_period = 0", "watchdog.process_check_period", "more than 0"),
    ("control_port = 0", 'control_port = 0\ncontrol_allowed_origins = ["null"]', "watchdog.control_allowed_origins[0]",
     "expected an origin"),
    # [[alerts]]
    ("[[projects]]", '[[alerts]]\nurl = "https://h/x"\nrepeat_interval = 0\n\n[[projects]]', "alerts[0].repeat_interval",
     "more than 0"),
    ("[[projects]]", '[[alerts]]\nurl = "https://h/x"\ndisconnect_threshold = -1\n\n[[projects]]',
     "alerts[0].disconnect_threshold", "0 or more"),
    ("[[projects]]", '[[alerts]]\nurl = "https://h/x"\nrules = ["hang", "hang"]\n\n[[projects]]', "alerts[0].rules[1]",
     "repeats alerts[0].rules[0]"),
    ("[[projects]]", '[[alerts]]\nurl = "https://h/x"\nrules = ["hangs"]\n\n[[projects]]', "alerts[0].rules[0]",
     "unknown rule"),
    ("[[projects]]", '[[alerts]]\nurl = "https://h/x"\nformat = "teams"\n\n[[projects]]', "alerts[0].format",
     "slack, discord or json"),    # fixed ports: each alone is fine (collisions: the packages' tests)
    ("control_port = 0", "control_port = 8765", None, None),
    ("[sim]\nport = 0", "[sim]\nport = 8090", None, None),
]

@pytest.mark.parametrize("old, new, key, problem", AUDIT, ids=[f"{a[2] or 'ok'}:{i}" for i, a in enumerate(AUDIT)])
def test_every_setting_is_checked_for_range_uniqueness_and_type(write_config, old: str, new: str, key: str | None,
                                                                problem: str | None) -> None:
    check_setting(write_config, old, new, key, problem)


@dataclass(frozen=True, kw_only=True)
class GateTables:
    """A package's slice as a test declares one: a top-level key of its own, read, checked, with a port and a secret."""

    gate: dict[str, int | str]


def _read_gate(checks, raw: dict, data_dir: Path) -> dict[str, object]:
    gate = checks.as_table(raw.get("gate", {}), "gate")
    checks.check_port(gate.get("port", 0), "gate.port")
    return {"gate": gate}


@dataclass(frozen=True)
class GatedConfig(GateTables, config.Config):
    slices = (ConfigSlice(GateTables, _read_gate, ports=lambda c: [("gate.port", "127.0.0.1", c.gate.get("port", 0))],
                          secret_keys=lambda c: ["gate.key"] if c.gate.get("key") else []),)


def test_the_shared_loader_knows_only_the_supervisors_tables_and_what_each_slice_declares(write_config) -> None:
    """The supervisor's base names no product table: a slice adds its keys, checks, ports and secrets."""
    bare = write_config('data_dir = "data"\n[watchdog]\ncontrol_port = 8765\n')
    assert not hasattr(config.load(config.Config, bare), "accounts")
    with pytest.raises(ConfigError, match=r": (sim|accounts): unknown key"):
        config.load(config.Config, write_config(BASE_CONFIG, name="full.toml"))
    path = write_config('data_dir = "data"\n[watchdog]\ncontrol_port = 8765\n[gate]\nport = 9\nkey = "k3y"\n',
                        name="gate.toml")
    gated = config.load(GatedConfig, path)
    assert gated.gate == {"port": 9, "key": "k3y"}
    path.chmod(path.stat().st_mode | stat.S_IROTH)
    assert "holds secrets (gate.key)" in readable_secrets(gated)
    with pytest.raises(ConfigError, match=r": gate\.port: port 70000 out of range"):
        config.load(GatedConfig, write_config('[gate]\nport = 70000\n', name="bad.toml"))
    with pytest.raises(ConfigError, match=r": gate\.port: port 8765 is also watchdog\.control_port"):
        config.load(GatedConfig, write_config('[watchdog]\ncontrol_port = 8765\n[gate]\nport = 8765\n', name="clash.toml"))
