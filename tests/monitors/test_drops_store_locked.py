"""A drops.db locked by another program (sqlite3 in BEGIN EXCLUSIVE): the monitor's loop stays alive (it
says so in its status), it is not restarted, and the drop is recorded once the lock is released."""
from __future__ import annotations

import sqlite3
import subprocess

import pytest

from tests.bridge_support import inject
from tests.conftest import GROUP_A, Processes, wait_until
from tests.watchdog.test_system import EXPECTED, status
from watchdog.shared import endpoints
from watchdog.shared.recovery_log import RecoveryLog


def drops(data_dir) -> list[tuple]:
    conn = sqlite3.connect(f"file:{data_dir / 'drops.db'}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT drop_number FROM drops").fetchall()
    finally:
        conn.close()


@pytest.mark.slow
def test_a_locked_drops_store_is_waited_out_not_punished(procs: Processes, data_dir) -> None:
    procs.start("run", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    components = wait_until(lambda: (c := status(data_dir)) and all(c.get(n, {}).get("healthy") for n in EXPECTED)
                            and c, 40, message="the system up")
    monitor_pid = components["monitor:lawley"]["pid"]
    holder = subprocess.Popen(["sqlite3", str(data_dir / "drops.db")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        holder.stdin.write("BEGIN EXCLUSIVE;\nSELECT 'locked';\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "locked"
        inject(endpoints.url(data_dir, "sim"), "DR4400001 while drops.db is locked", GROUP_A)
        wait_until(lambda: "drops store unavailable" in status(data_dir)["monitor:lawley"]["status_text"], 20,
                   message="the monitor's loop reporting the lock in its status")
        assert "locked by another process" in status(data_dir)["monitor:lawley"]["status_text"]
        holder.stdin.write("COMMIT;\n")
        holder.stdin.close()
        holder.wait(10)
        wait_until(lambda: ("DR4400001",) in drops(data_dir), 20, message="the drop recorded after the release")
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert status(data_dir)["monitor:lawley"]["pid"] == monitor_pid
    assert not [r for r in RecoveryLog(data_dir / "recoveries.jsonl").read()
                if r["component"] == "monitor:lawley" and r["event"] in ("hang", "unhealthy", "exit", "restart")]
