"""`wa-watchdog drops` against a data directory that is wrong: an error naming the path, exit 2."""
from __future__ import annotations

from pathlib import Path

import pytest

from monitors.drops_store import open_drops_store
from tests.monitor_support import cli
from watchdog.components import load


@pytest.mark.slow
def test_drops_names_a_missing_data_dir_or_a_missing_store(config_path: Path, tmp_path: Path) -> None:
    typo = tmp_path / "typo"
    missing = cli(config_path, "drops", "--data-dir", str(typo))
    assert missing.returncode == 2
    assert missing.stderr.strip() == (f"wa-watchdog drops: data directory {typo} does not exist (check --data-dir "
                                      f"or data_dir in {config_path})")
    assert missing.stdout == ""

    empty = tmp_path / "empty"
    empty.mkdir()
    no_store = cli(config_path, "drops", "--data-dir", str(empty), "--json")
    assert no_store.returncode == 2 and f"no drops store in {empty}" in no_store.stderr and no_store.stdout == ""

    open_drops_store(load(config_path, empty)).close()  # a store the monitors created, still without drops
    fresh = cli(config_path, "drops", "--data-dir", str(empty))
    assert (fresh.returncode, fresh.stdout.strip()) == (0, "no drops recorded")
