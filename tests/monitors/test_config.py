"""The drops domain's tables ([[projects]], [monitors], [drops_api], [[webhooks]], [database]): defaults, and
every bad value fails the load naming its key (exit 2)."""
from __future__ import annotations

import base64
from pathlib import Path

import pytest

from monitors.config import ProjectConfig
from monitors.events import WEBHOOK_EVENTS
from tests.config_support import check_setting, run_cli
from tests.conftest import BASE_CONFIG, GROUP_A
from watchdog.components import Config, load
from watchdog.shared.config import ConfigError, WatchdogConfig

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
HOOK = f'[[webhooks]]\nname = "crm"\nurl = "http://127.0.0.1:9/hook"\nsecret = "{SECRET}"\n'


def test_defaults_off_on_loopback_and_every_event(write_config) -> None:
    config = load(write_config(BASE_CONFIG))
    assert not config.drops_api.enabled and config.drops_api.host == "127.0.0.1" and config.webhooks == []
    config = load(write_config(BASE_CONFIG + "\n[drops_api]\nenabled = true\n" + HOOK))
    (hook,) = config.webhooks
    assert hook.events == list(WEBHOOK_EVENTS) and hook.max_attempts == 10 and hook.secret == SECRET


@pytest.mark.parametrize("extra, key", [
    ('[drops_api]\nenabled = true\nhost = "0.0.0.0"\n', "drops_api.token"),
    ('[drops_api]\nport = 70000\n', "drops_api.port"),
    ('[drops_api]\nenabeld = true\n', "drops_api.enabeld"),
    (HOOK, "drops_api.enabled"),
    ('[drops_api]\nenabled = true\n' + HOOK.replace(SECRET, "s3cret"), "webhooks[0].secret"),
    ('[drops_api]\nenabled = true\n' + HOOK.replace(SECRET, "whsec_" + base64.b64encode(b"short").decode()),
     "webhooks[0].secret"),
    ('[drops_api]\nenabled = true\n' + HOOK + 'events = ["drop.recorded", "drop.deleted"]\n', "webhooks[0].events[1]"),
    ('[drops_api]\nenabled = true\n' + HOOK + 'events = []\n', "webhooks[0].events"),
    ('[drops_api]\nenabled = true\n' + HOOK + "max_attempts = 0\n", "webhooks[0].max_attempts"),
    ('[drops_api]\nenabled = true\n' + HOOK.replace("http://", "ftp://"), "webhooks[0].url"),
    ('[drops_api]\nenabled = true\n' + HOOK + HOOK, "webhooks[1].name"),
    ('[drops_api]\nenabled = true\n' + HOOK + 'start_at = "yesterday"\n', "webhooks[0].start_at"),
    ('[drops_api]\nenabled = true\n' + HOOK.replace("127.0.0.1:9/", "127.0.0.1:99999/"), "webhooks[0].url"),
    ('[drops_api]\nenabled = true\n' + HOOK.replace("127.0.0.1:9/", "/"), "webhooks[0].url"),
    ('[drops_api]\nenabled = true\n' + HOOK.replace(f'secret = "{SECRET}"\n', ""), "webhooks[0].secret"),
])
def test_bad_values_name_the_key(write_config, extra: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"{key.replace('[', '.').replace(']', '.')}: "):
        load(write_config(BASE_CONFIG + "\n" + extra))


def test_a_webhook_without_a_name_is_named_after_its_url_and_starts_at_the_current_event(write_config) -> None:
    unnamed = HOOK.replace('name = "crm"\n', "")
    config = load(write_config(BASE_CONFIG + "\n[drops_api]\nenabled = true\n" + unnamed
                               + unnamed.replace("127.0.0.1:9/hook", "user:pw@Hooks.Example:8443/a/b?token=x")))
    assert [(h.name, h.start_at) for h in config.webhooks] == [("127.0.0.1-9-hook", "now"),
                                                               ("hooks.example-8443-a-b", "now")]
    long = load(write_config(BASE_CONFIG + "\n[drops_api]\nenabled = true\n"
                             + unnamed.replace("/hook", "/" + "x" * 80))).webhooks[0].name
    assert len(long) == 64 and long == load(write_config(BASE_CONFIG + "\n[drops_api]\nenabled = true\n"
                                                         + unnamed.replace("/hook", "/" + "x" * 80))).webhooks[0].name
    assert load(write_config(BASE_CONFIG + "\n[drops_api]\nenabled = true\n" + unnamed
                             + 'start_at = "oldest"\n')).webhooks[0].start_at == "oldest"


def test_two_webhooks_whose_derived_names_collide_are_a_config_error_naming_the_key(write_config) -> None:
    unnamed = HOOK.replace('name = "crm"\n', "")
    text = BASE_CONFIG + "\n[drops_api]\nenabled = true\n" + unnamed + unnamed.replace("/hook", "/hook?v=2")
    with pytest.raises(ConfigError, match=r"webhooks\[1\]\.name: missing, and the name derived from the url "
                                          r"\('127\.0\.0\.1-9-hook'\) is the name of webhooks\[0\]"):
        load(write_config(text))


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


# Every numeric and list setting: range, uniqueness and type, one case per rule (the change, the key, the problem).
AUDIT = [
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
]

@pytest.mark.parametrize("old, new, key, problem", AUDIT, ids=[f"{a[2] or 'ok'}:{i}" for i, a in enumerate(AUDIT)])
def test_every_setting_is_checked_for_range_uniqueness_and_type(write_config, old: str, new: str, key: str | None,
                                                                problem: str | None) -> None:
    check_setting(write_config, old, new, key, problem)


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


@pytest.mark.parametrize(("enabled", "sizes"), [
    (1, [1]), (8, [1] * 8),  # a handful: each alone, a fault touches one project
    (9, [9]), (20, [20]), (21, [11, 10]), (60, [20, 20, 20]), (100, [20] * 5), (101, [17] * 5 + [16])])
def test_auto_keeps_a_handful_apart_and_groups_more_evenly(enabled: int, sizes: list[int]) -> None:
    projects = [ProjectConfig(f"p{n}", [GROUP_A]) for n in range(enabled)]
    config = Config(Path("wa.toml"), Path("data"), WatchdogConfig(), projects=projects)
    assert config.monitors.projects_per_process == "auto"  # the default
    assert [len(group) for group in config.monitor_groups()] == sizes
