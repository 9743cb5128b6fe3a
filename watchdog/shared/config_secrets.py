"""Which config values are secrets, and which are placeholders nobody replaced.

Why one place: the loader warns when a config that other users can read holds
a secret, `wa-watchdog check` says the same, and both must agree on what a
secret is (a token, a webhook secret, a password in a URL, a chat webhook's
URL), so that a config holding none (conf/demo.toml) draws no warning. A
placeholder (`REPLACE`, `CHANGEME`, `example.com`, `xxx`) is not a secret: it
is a value that will not work, and `check` names it.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

from watchdog.shared.config_model import Config

# Whole-value placeholders of a token, and words that mark a placeholder anywhere in a URL.
PLACEHOLDER_TOKEN = re.compile(r"^(x{3,}|\.{3}|<[^>]*>|(change|replace|set)[-_ ]?(me|this|it)?|secret|token|"
                               r"password|todo|tbd|your[-_ ].*)$", re.IGNORECASE)
PLACEHOLDER_WORD = re.compile(r"REPLACE|CHANGE[-_]?ME|XXX|<[^>]*>|YOUR[-_]", re.IGNORECASE)
EXAMPLE_HOST = re.compile(r"(^|\.)example\.(com|org|net)$|(^|\.)example$", re.IGNORECASE)
CHAT_WEBHOOK_FORMATS = ("slack", "discord")  # their webhook URL is the credential: whoever has it can post
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|PRIVATE", re.IGNORECASE)  # a [[programs]] env name


def placeholder_token(value: str) -> bool:
    return bool(PLACEHOLDER_TOKEN.match(value.strip())) or bool(re.search(r"REPLACE|CHANGEME|CHANGE_ME", value))


def placeholder_url(url: str) -> bool:
    """An example host, or a placeholder word in the host, path, query or credentials."""
    parts = urlsplit(url)
    return bool(EXAMPLE_HOST.search(parts.hostname or "")) or bool(PLACEHOLDER_WORD.search(url))


def has_password(url: str) -> bool:
    """A URL with a password in it (a database URL, a webhook's): the URL itself is then a secret."""
    try:
        return bool(urlsplit(url).password)
    except ValueError:
        return False


def secret_keys(config: Config) -> list[str]:
    """The keys whose values are secrets (a placeholder is none): what a world-readable config gives away."""
    found = [key for part in config.slices for key in part.secret_keys(config)]
    found += ["watchdog.control_token"] if config.watchdog.control_token else []
    found += [f"alerts[{i}].url" for i, alert in enumerate(config.alerts)
              if (alert.format in CHAT_WEBHOOK_FORMATS or has_password(alert.url)) and not placeholder_url(alert.url)]
    found += [f"programs[{i}].env.{name}" for i, program in enumerate(config.programs) for name, value in program.env
              if value and (SECRET_NAME.search(name) or has_password(value))]
    return found


def placeholders(config: Config) -> list[str]:
    """The URLs that still hold the example's placeholder: alerts, webhooks and databases that go nowhere."""
    urls = [(f"alerts[{i}].url", alert.url) for i, alert in enumerate(config.alerts)]
    urls += [url for part in config.slices for url in part.urls(config)]
    return [f"{key} = {url!r}" for key, url in urls if placeholder_url(url)]
