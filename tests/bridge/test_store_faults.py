"""The bridge's store under host faults, with real processes: locked by another program, corrupt, full disk."""
from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.bridge_support import bridge_url, health, inject, rows, sessions, start_bridge, start_sim
from tests.conftest import GROUP_A, ROOT, Processes, wait_until
from tests.bridge.test_outage_windows import ONLY_BRIDGE
from tests.host_faults import SmallDisk, small_disk
from tests.watchdog.test_system import status
from watchdog.shared.exitcodes import EXIT_CONFIG
from watchdog.shared.recovery_log import RecoveryLog


def queue_depth(sim_url: str) -> int:
    return sessions(sim_url)["queue_depth"]


@pytest.mark.slow
def test_a_store_locked_by_sqlite3_is_named_in_health_and_ingest_resumes_when_released(
        procs: Processes, data_dir: Path) -> None:
    _, sim_url = start_sim(procs, data_dir)
    bridge, url = start_bridge(procs, data_dir)
    store = data_dir / "accounts/main/messages.db"
    holder = subprocess.Popen(["sqlite3", str(store)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        holder.stdin.write("BEGIN EXCLUSIVE;\nSELECT 'locked';\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "locked"
        # seen while idle too (the bridge's probe takes and drops the write lock, writing nothing), and its end
        wait_until(lambda: health(url).get("state") == "store_error", timeout=10, message="store_error while idle")
        holder.stdin.write("COMMIT;\n")
        holder.stdin.flush()
        wait_until(lambda: health(url).get("state") == "connected", timeout=10, message="healthy again while idle")
        holder.stdin.write("BEGIN EXCLUSIVE;\nSELECT 'locked';\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "locked"
        message = inject(sim_url, "DR1000001 while locked", GROUP_A)
        # health keeps answering (2 s client timeout: a busy wait on the loop would miss it) and names the lock
        body = wait_until(lambda: (h := health(url)).get("state") == "store_error"
                          and re.fullmatch(r"messages\.db locked by another process for [1-9]\d* s", h["reason"]) and h,
                          timeout=15, message="health naming the lock for a second or more")
        assert body["store_writable"] is False and body["pid"] == bridge.pid
        assert queue_depth(sim_url) == 1  # not acknowledged: WhatsApp keeps it
        holder.stdin.write("COMMIT;\n")
        holder.stdin.close()
        holder.wait(10)
        wait_until(lambda: rows(data_dir, "SELECT id FROM messages WHERE id = ?", message["id"]), timeout=10,
                   message="the message stored once the lock is released")
        wait_until(lambda: health(url)["state"] == "connected" and queue_depth(sim_url) == 0, timeout=10,
                   message="healthy again and acknowledged")
        assert bridge.poll() is None
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def corrupt_sqlite(path: Path) -> None:
    """A SQLite file of some pages with its third page zeroed, as a bad disk sector leaves it."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE filler (x TEXT)")
    conn.executemany("INSERT INTO filler VALUES (?)", [("x" * 500,) for _ in range(200)])
    conn.commit()
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(path, "r+b") as f:
        f.seek(size * 2)
        f.write(b"\0" * size)


def _bridge_refuses(config_path: Path, data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "watchdog.cli", "bridge", "--account", "main", "--config",
                           str(config_path)], cwd=ROOT, capture_output=True, text=True, timeout=30)


@pytest.mark.slow
def test_a_corrupt_messages_db_is_refused_with_exit_2_naming_the_file_and_the_restore_procedure(
        config_path: Path, data_dir: Path) -> None:
    store = data_dir / "accounts/main/messages.db"
    store.parent.mkdir(parents=True)
    corrupt_sqlite(store)
    done = _bridge_refuses(config_path, data_dir)
    assert done.returncode == EXIT_CONFIG, done.stderr
    assert f"{store} is corrupt (" in done.stderr and "docs/OPERATIONS.md" in done.stderr
    assert "Traceback" not in done.stderr
    assert "A corrupt store" in (ROOT / "docs/OPERATIONS.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_a_corrupt_drops_db_makes_the_monitor_exit_2_not_crash_loop(config_path: Path, data_dir: Path) -> None:
    drops = data_dir / "drops.db"
    data_dir.mkdir()
    corrupt_sqlite(drops)
    done = subprocess.run([sys.executable, "-m", "watchdog.cli", "monitor", "--project", "lawley", "--config",
                           str(config_path)], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == EXIT_CONFIG, done.stderr
    assert f"{drops} is corrupt (" in done.stderr and "Traceback" not in done.stderr


def _bridge_in(disk: SmallDisk, config_path: Path, procs: Processes) -> subprocess.Popen:
    proc = subprocess.Popen(disk.command(sys.executable, "-m", "watchdog.cli", "bridge", "--account", "main",
                                         "--config", str(config_path)),
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    procs.started.append(proc)  # ended by pid with the others
    return proc


@pytest.mark.slow
def test_a_full_disk_keeps_the_bridge_serving_health_unacknowledged_and_it_resumes_by_itself(
        procs: Processes, config_path: Path, data_dir: Path) -> None:
    account_dir = data_dir / "accounts/main"
    _, sim_url = start_sim(procs, data_dir)
    with small_disk(account_dir) as disk:
        bridge = _bridge_in(disk, config_path, procs)
        url = wait_until(lambda: bridge_url(data_dir, bridge), timeout=15, message="the bridge's API")
        wait_until(lambda: health(url).get("state") == "connected", timeout=15, message="connected")
        filler = disk.fill()
        # seen while idle too: with the disk nearly full every tick probes with a write
        wait_until(lambda: health(url).get("state") == "store_error", timeout=30, message="store_error while idle")
        first = inject(sim_url, "DR1000002 on a full disk", GROUP_A)
        wait_until(lambda: health(url).get("state") == "store_error", timeout=10, message="store_error")
        assert "full" in health(url)["reason"] and queue_depth(sim_url) == 1

        # a restart on the full disk comes up serving health instead of crash-looping
        os.kill(bridge.pid, signal.SIGKILL)
        bridge.wait(10)
        bridge = _bridge_in(disk, config_path, procs)
        url = wait_until(lambda: bridge_url(data_dir, bridge), timeout=15, message="the restarted bridge's API")
        wait_until(lambda: health(url).get("state") == "store_error", timeout=15, message="store_error after restart")
        assert bridge.poll() is None and queue_depth(sim_url) == 1

        filler.unlink()
        wait_until(lambda: health(url).get("state") == "connected" and queue_depth(sim_url) == 0, timeout=10,
                   message="space back: stored and acknowledged by itself")
        # (sqlite3 inside the namespace: SQLite resolves /proc/<pid>/root to this namespace's /)
        stored = subprocess.run(disk.command("sqlite3", "-readonly", str(disk.path / "messages.db"),
                                             f"SELECT content FROM messages WHERE id = '{first['id']}'"),
                                capture_output=True, text=True, timeout=10)
        assert stored.stdout.strip() == "DR1000002 on a full disk", stored.stderr


@pytest.mark.slow
def test_under_the_watchdog_a_corrupt_store_is_failed_and_alerted_with_its_message(write_config) -> None:
    config_path = write_config(ONLY_BRIDGE)
    data_dir = config_path.parent / "data"
    store = data_dir / "accounts/main/messages.db"
    store.parent.mkdir(parents=True)
    corrupt_sqlite(store)
    procs = Processes(config_path)
    try:
        procs.start("run", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log = RecoveryLog(data_dir / "recoveries.jsonl")
        failed = wait_until(lambda: [r for r in log.read() if r["component"] == "bridge:main"
                                     and r["event"] == "failed"], 30, message="the bridge failed")
        assert f"{store} is corrupt" in failed[0]["cause"] and "docs/OPERATIONS.md" in failed[0]["cause"]
        bridge = wait_until(lambda: status(data_dir).get("bridge:main"), 10, message="status")
        assert bridge["state"] == "failed" and "is corrupt" in bridge["last_cause"]  # what the alert says too
        assert len([r for r in log.read() if r["component"] == "bridge:main" and r["event"] == "exit"]) == 1
    finally:
        procs.stop_all()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_bridge_restarted_on_a_full_disk_stays_up_found_by_the_watchdog_and_healthy_once_space_is_back(
        write_config) -> None:
    """The whole data dir full: the restarted bridge cannot publish run/bridge-main.json (ENOSPC). It serves
    anyway, the watchdog finds it on its health socket (store_error, no crash loop), and the URL is published
    and the bridge healthy soon after space returns."""
    config_path = write_config(ONLY_BRIDGE)
    data_dir = config_path.parent / "data"
    with small_disk(data_dir, "8m") as disk:
        procs = Processes(config_path)
        watchdog = subprocess.Popen(disk.command(sys.executable, "-m", "watchdog.cli", "run", "--config",
                                                 str(config_path)), cwd=ROOT, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
        procs.started.append(watchdog)  # ended by pid (nsenter execs the watchdog)
        try:
            def bridge() -> dict:
                return status(disk.outside).get("bridge:main") or {}
            first = wait_until(lambda: bridge().get("healthy") and bridge(), 30, message="the bridge healthy")
            filler = disk.fill()
            os.kill(first["pid"], signal.SIGKILL)
            restarted = wait_until(lambda: (b := bridge()).get("pid") not in (None, first["pid"])
                                   and b["condition"] == "store_error" and b, 30,
                                   message="the restarted bridge found by the watchdog, reporting the full disk")
            assert restarted["endpoints"] == {}  # its URL is not published: the disk is full
            filler.unlink()
            freed = time.monotonic()
            healthy = wait_until(lambda: (b := bridge()).get("healthy") and b, 15, message="healthy once space is back")
            took = time.monotonic() - freed
            assert healthy["pid"] == restarted["pid"] and healthy["restarts"] == 1, healthy  # it never exited
            assert healthy["endpoints"]["api"].startswith("http://127.0.0.1:")
            print(f"healthy {took:.2f} s after space returned")
        finally:
            procs.stop_all()
