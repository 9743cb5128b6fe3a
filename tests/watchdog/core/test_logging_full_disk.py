"""The watchdog's own logging on a full disk (a small tmpfs): child log files and the recovery log drop
what they cannot write, never raise, and carry on once space is back."""
from __future__ import annotations

from pathlib import Path

from loguru import logger

from tests.host_faults import small_disk
from watchdog.core.child_output import RotatingFile
from watchdog.shared.recovery_log import RecoveryLog


def test_child_logs_and_the_recovery_log_survive_enospc(tmp_path: Path) -> None:
    errors: list[str] = []
    sink = logger.add(lambda message: errors.append(str(message)), level="ERROR", format="{message}")
    try:
        with small_disk(tmp_path / "disk", "1m") as disk:
            log_file = RotatingFile(disk.outside / "logs/bridge-main.log", max_bytes=10_000_000)
            recovery = RecoveryLog(disk.outside / "recoveries.jsonl")
            log_file.write(b"before\n")
            recovery.append("bridge:main", "start")
            filler = disk.fill()
            for _ in range(3):  # no exception, whatever is lost
                log_file.write(b"x" * 8192 + b"\n")
            for _ in range(200):  # more than the free end of the file's last page (tmpfs allocates by page)
                recovery.append("bridge:main", "exit", cause="SIGKILL", pid=1)
            assert log_file.dropped_bytes > 0
            assert sum("not written" in e for e in errors) == 2, errors  # each says so once, without a traceback
            assert not any("Traceback" in e for e in errors)
            filler.unlink()
            log_file.write(b"after\n")
            recovery.append("bridge:main", "healthy", pid=2)
            log_file.close()
            text = (disk.outside / "logs/bridge-main.log").read_text()
            assert text.startswith("before\n") and text.endswith("after\n")
            assert "bytes of output not logged: No space left on device]" in text
            events = [r["event"] for r in recovery.read()]
            assert events[0] == "start" and events[-1] == "healthy"
    finally:
        logger.remove(sink)
