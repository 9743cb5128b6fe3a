"""Other local users: what a running system creates under umask 022 is not theirs to read or to lock,
and a lock some other process holds never freezes supervision. Checked as the user `nobody` where possible."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.session_lock import SessionLock, holder_pid
from tests.bridge_support import inject
from tests.conftest import BASE_CONFIG, GROUP_A, Processes, wait_until
from tests.host_faults import as_nobody, which, world_traversable_dir
from tests.watchdog.test_system import EXPECTED, status
from watchdog.shared import endpoints, locks
from watchdog.shared.recovery_log import RecoveryLog


@pytest.fixture
def shared_base() -> Iterator[Path]:
    base = world_traversable_dir()
    yield base
    shutil.rmtree(base, ignore_errors=True)


def others_bits(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode) & 0o007


def hold_lock(path: Path) -> subprocess.Popen:
    """Another process (not the one the file names) holding `path` with flock, as a stray tool would."""
    holder = subprocess.Popen([which("flock"), "--shared", str(path), "sleep", "60"])
    wait_until(lambda: _held(path), timeout=5, message=f"{path} held")
    return holder


def _held(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        return bool(locks.holders(fd))
    finally:
        os.close(fd)


@pytest.mark.slow
def test_a_running_system_under_umask_022_gives_other_users_nothing(shared_base: Path) -> None:
    config = shared_base / "wa.toml"
    config.write_text(BASE_CONFIG, encoding="utf-8")
    config.chmod(0o644)  # readable, holds no secrets: allowed
    data_dir = shared_base / "data"
    procs = Processes(config)
    try:
        procs.start("run", umask=0o022, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: all(status(data_dir).get(n, {}).get("healthy") for n in EXPECTED), 40,
                   message="the system up")
        inject(endpoints.url(data_dir, "sim"), "DR7000001 secret message", GROUP_A)
        store = data_dir / "accounts/main/messages.db"
        wait_until(lambda: Path(f"{store}-wal").exists(), message="the WAL")

        assert others_bits(data_dir) == 0
        for private_dir in (data_dir / "run", data_dir / "accounts/main/session"):
            assert stat.S_IMODE(private_dir.stat().st_mode) == 0o700, private_dir
        private = [*(data_dir / "run").glob("*"), data_dir / "accounts/main/session/session.lock",
                   data_dir / "recoveries.jsonl.lock"]
        assert {p.name for p in private} >= {"watchdog.lock", "control.token", "watchdog.json", "bridge-main.json",
                                             "session.lock", "recoveries.jsonl.lock"}
        for path in private:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        data = [store, Path(f"{store}-wal"), Path(f"{store}-shm"), data_dir / "drops.db", data_dir / "recoveries.jsonl",
                *(data_dir / "logs").glob("*.log")]
        for path in data:
            assert others_bits(path) == 0, f"{path} {stat.filemode(path.stat().st_mode)}"

        # as another user: no messages, no locks to hold
        read = as_nobody("sqlite3", "-readonly", str(store), "SELECT content FROM messages")
        assert read.returncode != 0 and "secret message" not in read.stdout
        for lock in (data_dir / "run/watchdog.lock", data_dir / "accounts/main/session/session.lock",
                     data_dir / "recoveries.jsonl.lock"):
            opened = as_nobody("python3", "-c", f"open({str(lock)!r})")
            assert opened.returncode != 0 and "PermissionError" in opened.stderr, lock
        control = shared_base / "world-readable.txt"  # the check itself can fail: nobody reads a 0644 file here
        control.write_text("readable")
        control.chmod(0o644)
        assert as_nobody("cat", str(control)).stdout == "readable"
    finally:
        procs.stop_all()


def test_the_recovery_log_does_not_wait_for_a_lock_held_elsewhere(tmp_path: Path) -> None:
    log = RecoveryLog(tmp_path / "recoveries.jsonl")
    log.append("watchdog", "start")
    holder = hold_lock(tmp_path / "recoveries.jsonl.lock")
    try:
        log.append("bridge:main", "exit", cause="SIGKILL", pid=1)  # returns after a bounded wait
        assert [r["event"] for r in log.read()] == ["start", "exit"]
    finally:
        holder.kill()
        holder.wait()


def test_a_session_lock_held_by_a_stranger_is_replaced_not_waited_for(tmp_path: Path) -> None:
    session = tmp_path / "session"
    session.mkdir(mode=0o700)
    lock_file = session / "session.lock"
    lock_file.write_text("999999\n")  # names a pid that is not the holder
    holder = hold_lock(lock_file)
    try:
        lock = SessionLock(session)
        assert holder_pid(session) == os.getpid()
        lock.release()
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_a_watchdog_lock_held_by_a_stranger_does_not_keep_wa_watchdog_run_out(procs: Processes,
                                                                              data_dir: Path) -> None:
    lock_file = data_dir / "run/watchdog.lock"
    lock_file.parent.mkdir(parents=True, mode=0o700)
    lock_file.write_text("")
    holder = hold_lock(lock_file)
    try:
        procs.start("run", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: status(data_dir), 15, message="the watchdog's control API")
    finally:
        holder.kill()
        holder.wait()
