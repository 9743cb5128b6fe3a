"""drops.db on a full disk (a small tmpfs): a write is StoreUnavailable (the monitor retries it with backoff,
as while PostgreSQL is down), not an sqlite3 error that would end the monitor; it works again once space is back."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.host_faults import small_disk

# Run inside the mount namespace: SQLite resolves /proc/<pid>/root back to this namespace's /.
INSIDE = """
import sys
from pathlib import Path
from monitors.store.sql import StoreUnavailable
from monitors.store.sqlite import SqliteBackend

disk = Path(sys.argv[1])
store = SqliteBackend(disk / "drops.db")
with store.transaction() as tx:
    tx.run("CREATE TABLE probe (x BLOB)")
with open(disk / "filler", "wb") as filler:
    try:
        while True:
            filler.write(bytes(65536))
            filler.flush()
    except OSError:
        pass
try:
    for _ in range(50):
        with store.transaction() as tx:
            tx.run("INSERT INTO probe VALUES (?)", (bytes(65536),))
    print("never full")
except StoreUnavailable as exc:
    print("unavailable:", exc)
(disk / "filler").unlink()
with store.transaction() as tx:
    tx.run("INSERT INTO probe VALUES (?)", (b"after",))
print("written again")
"""


def test_a_full_disk_is_store_unavailable_and_passes(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "2m") as disk:
        done = subprocess.run(disk.command(sys.executable, "-c", INSIDE, str(disk.path)), cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("unavailable: drops.db: database or disk is full"), done.stdout
    assert lines[-1] == "written again"
