"""`wa-watchdog drops` and `feedback` read whichever store the config names; an unreachable PostgreSQL is a
clear message, never a traceback; a new drops.db is not readable by other users."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from monitors.drops_store import Submission, open_drops_store
from tests.conftest import BASE_CONFIG, GROUP_A
from tests.monitor_support import cli
from tests.pg import PgCluster
from watchdog.components import load
from watchdog.shared.exitcodes import EXIT_ERROR


def record_one(config_path: Path) -> str:
    drops = open_drops_store(load(config_path))
    (drop,) = drops.record("lawley", "main", 1, [Submission("DR1734150", GROUP_A, "Lawley Fibre",
                                                            "27710000001@s.whatsapp.net", "M1",
                                                            "2026-11-24 08:00:00.000000+00:00", False)], None)
    drops.close()
    return drop.public_id


@pytest.mark.slow
def test_drops_lists_the_postgresql_store_and_names_an_outage(write_config, pg_cluster: PgCluster,  # noqa: ANN001
                                                              pg_url: str) -> None:
    config_path = write_config(BASE_CONFIG + f'\n[database]\nurl = "{pg_url}"\n')
    public_id = record_one(config_path)
    listing = cli(config_path, "drops", "--json")
    assert listing.returncode == 0, listing.stderr
    (row,) = json.loads(listing.stdout)
    assert (row["id"], row["drop_number"], row["project"], row["resubmissions"]) == (
        public_id, "DR1734150", "lawley", 0)
    assert not (config_path.parent / "data" / "drops.db").exists()  # nothing written beside it
    pg_cluster.stop("immediate")
    down = cli(config_path, "drops")
    assert down.returncode == EXIT_ERROR
    assert "wa-watchdog drops: the drops store is unavailable, nothing done: PostgreSQL postgresql://" in down.stderr
    feedback = cli(config_path, "feedback", "--project", "lawley", "DR1734150", "--message", "needs correction")
    assert feedback.returncode == EXIT_ERROR and "the drops store is unavailable" in feedback.stderr
    assert "Traceback" not in down.stderr + feedback.stderr


def test_a_new_drops_db_is_private(config_path: Path) -> None:
    old = os.umask(0o022)
    try:
        record_one(config_path)
    finally:
        os.umask(old)
    path = config_path.parent / "data" / "drops.db"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for suffix in ("-wal", "-shm"):
        side = Path(f"{path}{suffix}")
        if side.exists():
            assert stat.S_IMODE(side.stat().st_mode) & 0o077 == 0
