"""The transport registry (bridge/transports/__init__.py): each name leads to its class and its own checks."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from bridge.transport import Transport
from bridge.transports import NAMES, kind, transport_class
from tests.conftest import BASE_CONFIG
from watchdog.components import load
from watchdog.shared.config import ConfigError


def _error(key: str, problem: str) -> ConfigError:
    return ConfigError(f"{key}: {problem}")


def test_every_registered_transport_leads_to_its_class() -> None:
    assert NAMES == ("sim", "neonize")
    for name in NAMES:
        if name == "neonize":
            pytest.importorskip("neonize")
        assert issubclass(transport_class(name), Transport)


def test_a_neonize_session_db_is_a_file_or_a_postgres_url(config_path: Path) -> None:
    account = load(config_path).account("main")
    check = kind("neonize").check_account
    for fine in ("", "neonize.db", "postgresql://wa@db.internal/wa"):
        check(replace(account, session_db=fine), _error)
    with pytest.raises(ConfigError, match=r"accounts\.main\.session_db: expected a file name .* got mysql://"):
        check(replace(account, session_db="mysql://wa:secret@db/wa"), _error)


def test_a_transport_without_a_session_has_nothing_to_pair_or_back_up(config_path: Path) -> None:
    config = load(config_path)
    sim = kind("sim")
    assert [f.line() for f in sim.findings(config, config.account("main"))] == [
        "ok    session   main: transport 'sim', nothing to pair"]
    assert sim.backup_items(config, config.account("main")) == ([], [])
    assert sim.session_files(config.account("main")) == []


def test_loading_a_config_runs_the_accounts_transport_check(write_config: Callable[[str], Path]) -> None:
    """The registry's check is the config's: a neonize account's mysql:// session_db is refused at load (exit 2)."""
    text = BASE_CONFIG.replace('transport = "sim"\nphone = "27710000000"',
                               'transport = "neonize"\nsession_db = "mysql://wa@db/wa"\nphone = "27710000000"')
    with pytest.raises(ConfigError, match=r"accounts\.main\.session_db: expected a file name"):
        load(write_config(text))
    with pytest.raises(ConfigError, match=r"accounts\.main\.transport: must be 'sim' or 'neonize', got 'carrier'"):
        load(write_config(BASE_CONFIG.replace('transport = "sim"', 'transport = "carrier"')))
