"""The drops domain's item for `wa-watchdog backup`: the drops store (drops.db), or a note when it is in
PostgreSQL (pg_dump's job)."""
from __future__ import annotations

from monitors.drops_store import drops_db_path
from watchdog.shared.component import BackupItem
from watchdog.components import Config


def items(config: Config) -> tuple[list[BackupItem], list[str]]:
    if config.database.url:
        return [], [f"drops store is in PostgreSQL: back it up with pg_dump '{config.database.url}'"]
    return [BackupItem("drops", drops_db_path(config.data_dir), True)], []
