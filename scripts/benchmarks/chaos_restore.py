"""The `restore` blow of scripts/chaos: docs/OPERATIONS.md's "A corrupt store" while WhatsApp queues.

A backup is taken while everything runs (`wa-watchdog backup`), the monitors'
cursors move on (drops posted after it are recorded) and the bridge is
killed once (its window reported by every monitor), the system is stopped
(SIGTERM to the watchdog) while the simulator, a process of its own, keeps
queuing for the offline session the drops posted meanwhile; then
`messages.db` is restored from the backup the way the procedure says (the
live file and its -wal/-shm moved aside as `messages.db.corrupt*`, the copy
put back 0640) and the system is started again. The restored file numbers
the replayed and backfilled messages with rowids of its own, some of which
the cursors (in the drops store, not restored) have already passed, and its
windows with ids of its own, one of which the drops store has seen reported.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import typing
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from scripts.benchmarks.system_run import ROOT, RunningSystem, wait_for
from watchdog.shared import clock

if typing.TYPE_CHECKING:
    from scripts.benchmarks.chaos_traffic import Injector

MESSAGES = Path("accounts/main/messages.db")  # the chaos system's one account: under the data dir and backup/data
CURSOR_MOVES = 2  # drops per project, posted after the backup, recorded before the stop: the cursors are past the copy
STOPPED_POSTS = 3  # drops per project posted while the system is stopped (the steady stream adds more)
RECORD_WAIT = 30.0  # seconds the drops posted after the backup may take to be recorded
START_WAIT = 90.0  # seconds the restarted system may take to be healthy (a cold start on a loaded machine)
STORE_MODE = 0o640  # docs/OPERATIONS.md: owner wa-watchdog, mode 0640


@dataclass
class Restored:
    """What one restore blow did: when it stopped the system (the restored store's window for the restore
    spans it) and the watchdog's exit code; the drops posted from the stop until the system was healthy again
    (queued by WhatsApp for the offline session)."""

    stopped_at: datetime
    stop_code: int | None
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


def _newest_window(system: RunningSystem) -> int:
    rows = system.query("messages", "SELECT COALESCE(MAX(id), 0) FROM disconnect_windows")
    return rows[0][0] if rows else 0


def _reported(system: RunningSystem, window: int, projects: int) -> bool:
    rows = system.query("drops", "SELECT COUNT(*) FROM reported_windows WHERE account = 'main' AND window_id = ? "
                                 "AND reported_at IS NOT NULL", window)
    return rows == [(projects,)]


def kill_bridge_and_wait_reported(system: RunningSystem, projects: int) -> None:
    """SIGKILL the bridge; wait until every monitor has reported its window (an id the restored file reuses)."""
    window, pid = _newest_window(system), system.pid("bridge:main")
    if pid is None:
        return  # being restarted right now
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):  # not reported in time: go on, the check will say so
        wait_for(lambda: _reported(system, window + 1, projects), RECORD_WAIT, "the kill's window reported",
                 interval=0.1)


def restore_blow(system: RunningSystem, injector: Injector, projects: int, offset: int = 0) -> Restored:
    """Back up, let the cursors move on, kill the bridge, stop, post while stopped, restore messages.db, start
    (see the module). `offset`: seconds the system's wall clock is off the true time (a faked clock)."""
    posts = injector.posts
    first = len(posts)
    backup = take_backup(system)
    kill_bridge_and_wait_reported(system, projects)
    moved = len(posts) + CURSOR_MOVES * projects
    with contextlib.suppress(TimeoutError):  # slow to record: stop all the same, the check will say what was lost
        wait_for(lambda: len(posts) >= moved and _recorded(system, [p.drop for p in posts[first:moved]]),
                 RECORD_WAIT, "the drops posted after the backup recorded", interval=0.1)
    stopped, stopped_at = len(posts), clock.now() + timedelta(seconds=offset)
    code = system.stop(sim=False)
    for _ in range(STOPPED_POSTS * projects):  # WhatsApp queues them for the offline session
        injector.post()
    restore_messages(system.data_dir, backup)
    system.start(START_WAIT)
    return Restored(stopped_at, code, [p.drop for p in posts[stopped:]])
