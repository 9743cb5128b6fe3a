"""The bridge's tables ([accounts.NAME], [sim]): paths in data_dir, and every bad value named (exit 2)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.config_support import SECOND_ACCOUNT, check_setting, run_cli
from tests.conftest import BASE_CONFIG, PACE_OFF
from watchdog.components import load
from watchdog.shared.config import ConfigError


def test_data_dir_override(config_path: Path, tmp_path: Path) -> None:
    config = load(config_path, tmp_path / "elsewhere")
    assert config.data_dir == tmp_path / "elsewhere"
    assert config.accounts["main"].store == tmp_path / "elsewhere/accounts/main/messages.db"


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
    ("watchdog_sec = 3.0", "watchdog_sec = 3.0\nmedia_max_mb = {video = 0}", "accounts.main.media_max_mb.video",
     "more than 0"),
    ("watchdog_sec = 3.0", "watchdog_sec = 3.0\nmedia_max_mb = {sticker = 1}", "accounts.main.media_max_mb.sticker",
     "unknown key"),
    ("watchdog_sec = 3.0", "watchdog_sec = 3.0\nsend_max_attempts = 0", "accounts.main.send_max_attempts", "more than 0"),
    ("watchdog_sec = 3.0", "watchdog_sec = 3.0\nsend_pause_s = 0", "accounts.main.send_pause_s", "more than 0"),
    # [accounts.NAME.pace] (bridge/pace.py)
    (PACE_OFF, "pace = { per_minute = -1 }", "accounts.main.pace.per_minute", "whole number"),
    (PACE_OFF, "pace = { reactions_per_minute = -3 }", "accounts.main.pace.reactions_per_minute", "whole number"),
    (PACE_OFF, "pace = { per_hour = 2.5 }", "accounts.main.pace.per_hour", "integer"),
    (PACE_OFF, "pace = { per_minute = 10, per_hour = 5 }", "accounts.main.pace.per_hour",
     "below per_minute"),
    (PACE_OFF, "pace = { per_hour = 100, per_day = 50 }", "accounts.main.pace.per_day",
     "below per_hour"),
    (PACE_OFF, "pace = { chat_gap_s = -1 }", "accounts.main.pace.chat_gap_s", "0 (off)"),
    (PACE_OFF, "pace = { ramp_s = -5 }", "accounts.main.pace.ramp_s", "0 (off)"),
    (PACE_OFF, "pace = { typing_chars_per_s = 0 }", "accounts.main.pace.typing_chars_per_s",
     "more than 0"),
    (PACE_OFF, "pace = { typing = \"yes\" }", "accounts.main.pace.typing", "true or false"),
    (PACE_OFF, "pace = { per_week = 3 }", "accounts.main.pace.per_week", "unknown"),
    (PACE_OFF, "pace = { per_minute = 0, chat_gap_s = 0, typing = false }", None, None),
    ("watchdog_sec = 3.0", "watchdog_sec = 3.0\nsend_wait_s = -1", "accounts.main.send_wait_s", "0 (off) or more"),
    ("watchdog_sec = 3.0", "watchdog_sec = 3.0\ndedupe_window_s = -1", "accounts.main.dedupe_window_s", "0 (off) or more"),
    ("[[projects]]", SECOND_ACCOUNT.replace("[accounts.other]", '[accounts."main account"]') + "\n[[projects]]",
     "accounts.main account", "name must be letters"),
    # uniqueness: one number, one session; one port, one listener
    ("[[projects]]", SECOND_ACCOUNT.replace("27710000009", "27710000000") + "\n[[projects]]", "accounts.other.phone",
     "also accounts.main.phone"),
    ("api_port = 0", "api_port = 8765" + SECOND_ACCOUNT.replace("api_port = 0", "api_port = 8765"),
     "accounts.other.api_port", "port 8765 is also accounts.main.api_port"),
]

@pytest.mark.parametrize("old, new, key, problem", AUDIT, ids=[f"{a[2] or 'ok'}:{i}" for i, a in enumerate(AUDIT)])
def test_every_setting_is_checked_for_range_uniqueness_and_type(write_config, old: str, new: str, key: str | None,
                                                                problem: str | None) -> None:
    check_setting(write_config, old, new, key, problem)


def test_the_control_port_and_the_simulator_port_differ(write_config) -> None:
    path = write_config(BASE_CONFIG.replace("control_port = 0", "control_port = 8765").replace(
        "[sim]\nport = 0", "[sim]\nport = 8765"))
    with pytest.raises(ConfigError, match=r"sim\.port: port 8765 is also watchdog\.control_port"):
        load(path)


@pytest.mark.slow
def test_unknown_account_is_a_config_error(config_path: Path) -> None:
    result = run_cli("bridge", "--account", "nobody", "--config", str(config_path))
    assert result.returncode == 2
    assert "no account named 'nobody'" in result.stderr


def test_a_repeated_account_table_is_a_config_error(write_config) -> None:
    path = write_config(BASE_CONFIG + '\n[accounts.main]\nphone = "27710000009"\n')
    result = run_cli("status", "--config", str(path))
    assert result.returncode == 2 and "not valid TOML" in result.stderr and "accounts" in result.stderr
    assert "Traceback" not in result.stderr
