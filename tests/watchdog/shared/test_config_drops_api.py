"""[drops_api] and [[webhooks]]: defaults, and every bad value fails the load naming its key (exit 2)."""
from __future__ import annotations

import base64

import pytest

from tests.conftest import BASE_CONFIG
from monitors.config import WEBHOOK_EVENTS
from watchdog.components import load
from watchdog.shared.config import ConfigError

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
