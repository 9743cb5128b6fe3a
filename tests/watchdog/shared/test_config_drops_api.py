"""[drops_api] and [[webhooks]]: defaults, and every bad value fails the load naming its key (exit 2)."""
from __future__ import annotations

import base64

import pytest

from tests.conftest import BASE_CONFIG
from watchdog.shared.config import WEBHOOK_EVENTS, ConfigError, load

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
    ('[drops_api]\nenabled = true\n' + HOOK.replace(f'secret = "{SECRET}"\n', ""), "webhooks[0].secret"),
])
def test_bad_values_name_the_key(write_config, extra: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"{key.replace('[', '.').replace(']', '.')}: "):
        load(write_config(BASE_CONFIG + "\n" + extra))
