"""Config validation: a bad file fails at start with exit code 2, naming the key and the file."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BASE_CONFIG, ROOT
from watchdog.shared.config import ConfigError, load


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


def test_project_pattern_and_template_are_checked(write_config) -> None:
    path = write_config(BASE_CONFIG + '\n[[projects]]\nname = "x"\ngroups = ["1@g.us"]\npattern = "DR(["\n')
    with pytest.raises(ConfigError, match=r"projects\[x\]\.pattern: not a valid regular expression"):
        load(path)
    path = write_config(BASE_CONFIG + '\n[[projects]]\nname = "x"\ngroups = ["1@g.us"]\n'
                        'feedback = { template = "{contractor} {drop}" }\n')
    with pytest.raises(ConfigError, match=r"projects\[x\]\.feedback\.template: unknown placeholder 'contractor'"):
        load(path)


def test_project_accounts_must_exist(write_config) -> None:
    path = write_config(BASE_CONFIG + '\n[[projects]]\nname = "x"\ngroups = ["1@g.us"]\nsend_account = "sender"\n')
    with pytest.raises(ConfigError, match=r"projects\[x\]\.send_account: no account named 'sender'"):
        load(path)


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


@pytest.mark.slow
def test_unknown_account_is_a_config_error(config_path: Path) -> None:
    result = run_cli("bridge", "--account", "nobody", "--config", str(config_path))
    assert result.returncode == 2
    assert "no account named 'nobody'" in result.stderr


@pytest.mark.parametrize("name", ["demo.toml", "prod.example.toml"])
def test_shipped_configs_are_valid(name: str) -> None:
    config = load(ROOT / "conf" / name)
    assert config.accounts and config.projects


SECOND_ACCOUNT = '\n[accounts.other]\ntransport = "sim"\nphone = "27710000009"\napi_port = 0\n'
# Every numeric and list setting: range, uniqueness and type, one case per rule (the change, the key, the problem).
AUDIT = [
    # [sim] and its traffic: the flood of issue 14 (interval = -1 queued 24,655 messages in 6 s)
    ("[sim]\nport = 0\n", "[sim]\nport = 0\n[sim.traffic]\nenabled = true\ninterval = -1\n", "sim.traffic.interval", "at least 0.01"),
    ("[sim]\nport = 0\n", "[sim]\nport = 0\n[sim.traffic]\ninterval = 0\n", "sim.traffic.interval", "at least 0.01"),
    ("[sim]\nport = 0\n", '[sim]\nport = 0\n[sim.traffic]\ninterval = "3"\n', "sim.traffic.interval", "expected a number"),
    ("[sim]\nport = 0\n", "[sim]\nport = -1\n", "sim.port", "out of range"),
    ("[sim]\nport = 0\n", "[sim]\nport = 0\ndisconnect_every = [5.0]\n", "sim.disconnect_every", "[min_seconds, max_seconds]"),
    ("[sim]\nport = 0\n", "[sim]\nport = 0\ndisconnect_every = [9.0, 3.0]\n", "sim.disconnect_every", "min <= max"),
    ("[sim]\nport = 0\n", '[sim]\nport = 0\ndisconnect_every = ["a", "b"]\n', "sim.disconnect_every[0]", "expected a number"),
    ("[sim]\nport = 0\n", "[sim]\nport = 0\nwatchdog_sec = -1\n", "sim.watchdog_sec", "0 (off) or at least 0.5"),
    ("[sim]\nport = 0\n", "[sim]\nport = 0\nrss_limit_mb = 1\n", "sim.rss_limit_mb", "0 (no limit) or at least 16"),
    ('jid = "120363000000000002@g.us"', 'jid = "120363000000000001@g.us"', "sim.groups[1].jid", "repeats sim.groups[0].jid"),
    ('name = "Velo Test"', 'name = " "', "sim.groups[2].name", "must not be empty"),
    ('participants = ["27710000003"]', 'participants = ["+27 71 000 0003"]', "sim.groups[1].participants[0]", "digits only"),
    ('participants = ["27710000003"]', 'participants = ["27710000003", "27710000003"]', "sim.groups[1].participants[1]",
     "repeats"),
    ('participants = ["27710000003"]', 'participants = "27710000003"', "sim.groups[1].participants", "expected an array"),
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
    # [accounts.NAME]
    ("watchdog_sec = 3.0", "watchdog_sec = 0.01", "accounts.main.watchdog_sec", "0 (off) or at least 0.5"),
    ("watchdog_sec = 3.0", "watchdog_sec = 3.0\nrss_limit_mb = -1", "accounts.main.rss_limit_mb", "0 (no limit)"),
    ("initial_delay = 1.0", "initial_delay = -1.0", "accounts.main.probe.initial_delay", "0 or more"),
    ("initial_delay = 1.0", "initial_delay = 1.0\nperiod = 0", "accounts.main.probe.period", "more than 0"),
    ("initial_delay = 1.0", "initial_delay = 1.0\ntimeout = -1", "accounts.main.probe.timeout", "more than 0"),
    ("initial_delay = 1.0", "initial_delay = 1.0\nfailure_threshold = 0", "accounts.main.probe.failure_threshold",
     "more than 0"),
    ("watchdog_sec = 3.0", 'watchdog_sec = 3.0\nfollow_groups = ["120363000000000001@g.us", "120363000000000001@g.us"]',
     "accounts.main.follow_groups[1]", "repeats accounts.main.follow_groups[0]"),
    ("watchdog_sec = 3.0", 'watchdog_sec = 3.0\nmedia_dirs = "media"', "accounts.main.media_dirs", "expected an array"),
    ("watchdog_sec = 3.0", "watchdog_sec = 3.0\nmedia_dirs = [1]", "accounts.main.media_dirs[0]", "expected a path"),
    ("watchdog_sec = 3.0", 'watchdog_sec = 3.0\nmedia_dirs = ["media", "media"]', "accounts.main.media_dirs[1]", "repeats"),
    # browser-forgery allow-lists, media limits and the outbox (issue 9)
    ("watchdog_sec = 3.0", 'watchdog_sec = 3.0\napi_allowed_origins = ["qa.example.com"]',
     "accounts.main.api_allowed_origins[0]", "expected an origin like https://qa.example.com"),
    ("watchdog_sec = 3.0", 'watchdog_sec = 3.0\napi_allowed_origins = ["https://qa.example.com/path"]',
     "accounts.main.api_allowed_origins[0]", "expected an origin"),
    ("watchdog_sec = 3.0", 'watchdog_sec = 3.0\napi_allowed_origins = ["https://qa.example.com"]', None, None),
    ("control_port = 0", 'control_port = 0\ncontrol_allowed_origins = ["null"]', "watchdog.control_allowed_origins[0]",
     "expected an origin"),
    ("watchdog_sec = 3.0", "watchdog_sec = 3.0\nmedia_max_mb = {video = 0}", "accounts.main.media_max_mb.video",
     "more than 0"),
    ("watchdog_sec = 3.0", "watchdog_sec = 3.0\nmedia_max_mb = {sticker = 1}", "accounts.main.media_max_mb.sticker",
     "unknown key"),
    ("watchdog_sec = 3.0", "watchdog_sec = 3.0\nsend_max_attempts = 0", "accounts.main.send_max_attempts", "more than 0"),
    ("watchdog_sec = 3.0", "watchdog_sec = 3.0\nsend_wait_s = -1", "accounts.main.send_wait_s", "0 (off) or more"),
    ("watchdog_sec = 3.0", "watchdog_sec = 3.0\ndedupe_window_s = -1", "accounts.main.dedupe_window_s", "0 (off) or more"),
    ("watchdog_sec = 3.0", "watchdog_sec = 3.0\nsend_pause_s = 0", "accounts.main.send_pause_s", "more than 0"),
    ("[[projects]]", SECOND_ACCOUNT.replace("[accounts.other]", '[accounts."main account"]') + "\n[[projects]]",
     "accounts.main account", "name must be letters"),
    # uniqueness across tables: accounts, ports
    ("[[projects]]", SECOND_ACCOUNT.replace("27710000009", "27710000000") + "\n[[projects]]", "accounts.other.phone",
     "also accounts.main.phone"),
    ("control_port = 0", "control_port = 8765", None, None),  # (a fixed port alone is fine)
        ("[sim]\nport = 0", "[sim]\nport = 8090", None, None),
    ("api_port = 0", "api_port = 8765\n[watchdog.x]", None, "unknown key"),  # placeholder replaced below
    # [[projects]]: named by name, unique names and groups
    ('name = "mohadin"', 'name = "lawley"', "projects[1].name", "already the name of the project at position 0"),
    ('name = "mohadin"', 'name = "mo hadin"', "projects[mo hadin].name", "must be letters"),
    ('groups = ["120363000000000002@g.us"]', 'groups = ["120363000000000002@g.us", "120363000000000002@g.us"]',
     "projects[mohadin].groups[1]", "repeats projects[mohadin].groups[0]"),
    ('groups = ["120363000000000002@g.us"]', "groups = []", "projects[mohadin].groups", "at least one group"),
    ('groups = ["120363000000000002@g.us"]', 'groups = "120363000000000002@g.us"', "projects[mohadin].groups",
     "expected an array"),
    ('groups = ["120363000000000002@g.us"]', 'groups = ["120363000000000002@g.us"]\nwatchdog_sec = -2',
     "projects[mohadin].watchdog_sec", "0 (off)"),
    ('groups = ["120363000000000002@g.us"]', 'groups = ["120363000000000002@g.us"]\nrss_limit_mb = 2',
     "projects[mohadin].rss_limit_mb", "at least 16"),
    ('groups = ["120363000000000002@g.us"]', 'groups = ["120363000000000002@g.us"]\nenvironment = "staging"',
     "projects[mohadin].environment", "'prod' or 'dev'"),
    ('groups = ["120363000000000002@g.us"]', 'groups = ["120363000000000002@g.us"]\nenabled = 1',
     "projects[mohadin].enabled", "expected true or false"),
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
     "slack, discord or json"),
]
AUDIT[AUDIT.index(("api_port = 0", "api_port = 8765\n[watchdog.x]", None, "unknown key"))] = (
    "api_port = 0", "api_port = 8765" + SECOND_ACCOUNT.replace("api_port = 0", "api_port = 8765"),
    "accounts.other.api_port", "port 8765 is also accounts.main.api_port")


@pytest.mark.parametrize("old, new, key, problem", AUDIT, ids=[f"{a[2] or 'ok'}:{i}" for i, a in enumerate(AUDIT)])
def test_every_setting_is_checked_for_range_uniqueness_and_type(write_config, old: str, new: str, key: str | None,
                                                                problem: str | None) -> None:
    assert old in BASE_CONFIG, old
    text = BASE_CONFIG.replace(old, new, 1)
    if "[accounts.other]" in text or "main account" in text:
        text = text.replace('name = "lawley"', 'name = "lawley"\nlisten_account = "main"').replace(
            'name = "mohadin"', 'name = "mohadin"\nlisten_account = "main"')
    path = write_config(text)
    if key is None:
        load(path)
        return
    with pytest.raises(ConfigError) as error:
        load(path)
    assert f"{path}: {key}: " in str(error.value)
    assert problem in str(error.value)


def test_the_control_port_and_the_simulator_port_differ(write_config) -> None:
    path = write_config(BASE_CONFIG.replace("control_port = 0", "control_port = 8765").replace(
        "[sim]\nport = 0", "[sim]\nport = 8765"))
    with pytest.raises(ConfigError, match=r"sim\.port: port 8765 is also watchdog\.control_port"):
        load(path)


def test_the_drops_api_port_differs_from_the_others_when_enabled(write_config) -> None:
    base = BASE_CONFIG.replace("control_port = 0", "control_port = 8765")
    load(write_config(base + "\n[drops_api]\nport = 8765\n"))  # disabled: it binds nothing
    with pytest.raises(ConfigError, match=r"drops_api\.port: port 8765 is also watchdog\.control_port"):
        load(write_config(base + "\n[drops_api]\nenabled = true\nport = 8765\n", name="on.toml"))


def test_two_projects_with_one_name_exit_2_before_anything_binds(write_config) -> None:
    path = write_config(BASE_CONFIG.replace('name = "mohadin"', 'name = "lawley"'))
    result = run_cli("run", "--config", str(path))
    assert result.returncode == 2, result.stderr
    assert f"{path}: projects[1].name: 'lawley' is already the name" in result.stderr
    assert "Traceback" not in result.stderr and "Address already in use" not in result.stderr


def test_a_repeated_account_table_is_a_config_error(write_config) -> None:
    path = write_config(BASE_CONFIG + '\n[accounts.main]\nphone = "27710000009"\n')
    result = run_cli("status", "--config", str(path))
    assert result.returncode == 2 and "not valid TOML" in result.stderr and "accounts" in result.stderr
    assert "Traceback" not in result.stderr
