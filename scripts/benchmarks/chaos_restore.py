"""The `restore` blow of scripts/chaos: docs/OPERATIONS.md's "A corrupt store" while WhatsApp queues.

A backup is taken while everything runs (`wa-watchdog backup`), the monitors'
cursors move on (drops posted after it are recorded), the system is stopped
(SIGTERM to the watchdog) while the simulator, a process of its own, keeps
queuing for the offline session the drops posted meanwhile; then
`messages.db` is restored from the backup the way the procedure says (the
live file and its -wal/-shm moved aside as `messages.db.corrupt*`, the copy
put back 0640) and the system is started again. The restored file numbers
the replayed and backfilled messages with rowids of its own, some of which
the cursors (in the drops store, not restored) have already passed.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import typing
from dataclasses import dataclass
from pathlib import Path

from scripts.benchmarks.system_run import ROOT, RunningSystem, wait_for

if typing.TYPE_CHECKING:
    from scripts.benchmarks.chaos import Injector

MESSAGES = Path("accounts/main/messages.db")  # the chaos system's one account: under the data dir and backup/data
CURSOR_MOVES = 2  # drops per project, posted after the backup, recorded before the stop: the cursors are past the copy
STOPPED_POSTS = 3  # drops per project posted while the system is stopped (the steady stream adds more)
RECORD_WAIT = 30.0  # seconds the drops posted after the backup may take to be recorded
START_WAIT = 90.0  # seconds the restarted system may take to be healthy (a cold start on a loaded machine)
STORE_MODE = 0o640  # docs/OPERATIONS.md: owner wa-watchdog, mode 0640


@dataclass
class Restored:
    """What one restore blow did: the watchdog's exit code when stopped; the drops recorded live between the
    backup and the stop (their messages are gone with the old file: the restore rewrites their history, so
    whether they end up marked backfilled says nothing); the drops posted from the stop until the system was
    healthy again (queued by WhatsApp for the offline session)."""

    stop_code: int | None
    rewritten: list[str]
    while_stopped: list[str]


def take_backup(system: RunningSystem) -> Path:
    """`wa-watchdog backup` into a fresh folder beside the data dir (never inside it); the dated folder it wrote."""
    root = system.workdir / "backups"
    root.mkdir(mode=0o700, exist_ok=True)
    into = Path(tempfile.mkdtemp(dir=root))  # one per blow: two backups in one second would share a name
    subprocess.run([sys.executable, "-m", "watchdog.cli", "backup", str(into), "--config", str(system.config_path)],
                   cwd=ROOT, check=True, capture_output=True, timeout=60)
    (folder,) = into.glob("wa-watchdog-*")
    return folder


def restore_messages(data_dir: Path, backup: Path) -> None:
    """Steps 2 and 3 of "A corrupt store" (the system is stopped): keep the live file and its WAL aside as
    `messages.db.corrupt`, `-wal`, `-shm`, and put the backup's copy back, mode 0640."""
    store = data_dir / MESSAGES
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.replace(store.with_name(store.name + suffix), store.with_name(f"{store.name}.corrupt{suffix}"))
    shutil.copyfile(backup / "data" / MESSAGES, store)
    os.chmod(store, STORE_MODE)


def _recorded(system: RunningSystem, drops: list[str]) -> bool:
    marks = ", ".join("?" * len(drops))
    rows = system.query("drops", f"SELECT COUNT(*) FROM drops WHERE drop_number IN ({marks})", *drops)
    return rows == [(len(drops),)]


def restore_blow(system: RunningSystem, injector: Injector, projects: int) -> Restored:
    """Back up, let the cursors move on, stop, post while stopped, restore messages.db, start (see the module)."""
    posts = injector.posts
    first = len(posts)
    backup = take_backup(system)
    moved = len(posts) + CURSOR_MOVES * projects
    with contextlib.suppress(TimeoutError):  # slow to record: stop all the same, the check will say what was lost
        wait_for(lambda: len(posts) >= moved and _recorded(system, [p.drop for p in posts[first:moved]]),
                 RECORD_WAIT, "the drops posted after the backup recorded", interval=0.1)
    stopped = len(posts)
    code = system.stop(sim=False)
    for _ in range(STOPPED_POSTS * projects):  # WhatsApp queues them for the offline session
        injector.post()
    restore_messages(system.data_dir, backup)
    system.start(START_WAIT)
    return Restored(code, [p.drop for p in posts[first:stopped]], [p.drop for p in posts[stopped:]])
