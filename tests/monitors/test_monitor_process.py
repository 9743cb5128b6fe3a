"""Several projects in one monitor process (`[monitors] projects_per_process`), under `wa-watchdog run`:
one program per group, each project's drops once, receipts followed once per sending account, cursors
saved lazily, and a kill of the process loses and repeats nothing."""
from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from scripts.benchmarks.system_run import CONTRACTORS, RunningSystem, config_text, group_jid
from tests.conftest import wait_until

C1 = CONTRACTORS[0]


@pytest.fixture
def system(tmp_path: Path) -> Iterator[RunningSystem]:
    running = RunningSystem(tmp_path, config_text(3, projects_per_process=2))
    running.start()
    yield running
    assert running.stop() == 0


def drops(system: RunningSystem) -> list[tuple[str, str]]:
    return sorted(system.query("drops", "SELECT project, drop_number FROM drops"))


def monitor_processes(system: RunningSystem) -> list[list[str]]:
    """The --project lists of the watchdog's monitor children."""
    assert system.proc is not None
    children = psutil.Process(system.proc.pid).children(recursive=True)
    found = []
    for child in children:
        with_args = child.cmdline()
        if "monitor" in with_args and "watchdog.cli" in with_args:
            found.append([with_args[i + 1] for i, word in enumerate(with_args) if word == "--project"])
    return sorted(found)


@pytest.mark.slow
def test_projects_share_a_process_record_once_and_survive_its_kill(system: RunningSystem) -> None:
    names = sorted(c["name"] for c in system.status() if c["name"].startswith("monitor"))
    assert names == ["monitor:p1..p2", "monitor:p3"]
    assert monitor_processes(system) == [["p1", "p2"], ["p3"]]

    for n in (1, 2, 3):
        system.inject(group_jid(n), C1, f"DR100000{n} installed")
    expected = [("p1", "DR1000001"), ("p2", "DR1000002"), ("p3", "DR1000003")]
    wait_until(lambda: drops(system) == expected, timeout=20, message="each project's drop recorded")
    # The simulator delivers at once; p1's process follows the account's receipts for all three projects.
    wait_until(lambda: system.query("drops", "SELECT COUNT(*) FROM feedback WHERE delivered_at IS NOT NULL") == [(3,)],
               timeout=20, message="every acknowledgement stamped delivered")
    keys = system.query("drops", "SELECT key FROM store_state WHERE key LIKE 'receipts:%'")
    assert keys == [("receipts:main",)]

    # Messages without drops move the cursors too, lazily (within the save interval), in both processes.
    for n in (1, 2, 3):
        system.inject(group_jid(n), C1, "morning all")
    wait_until(lambda: system.query("messages", "SELECT COUNT(*) FROM messages WHERE content = 'morning all'") == [(3,)],
               message="the messages without drops stored")
    at_newest = lambda: (system.query("drops", "SELECT DISTINCT rowid FROM cursors")  # noqa: E731
                         == system.query("messages", "SELECT MAX(rowid) FROM messages"))
    wait_until(at_newest, timeout=20, message="every project's cursor saved at the newest message")

    pid = system.pid("monitor:p1..p2")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    for n in (1, 2, 3):
        system.inject(group_jid(n), C1, f"DR200000{n} while a monitor process restarts")
    expected += [("p1", "DR2000001"), ("p2", "DR2000002"), ("p3", "DR2000003")]
    wait_until(lambda: drops(system) == sorted(expected), timeout=30, message="the drops posted during the restart")
    wait_until(lambda: system.pid("monitor:p1..p2") not in (None, pid) and system.all_healthy(), timeout=30,
               message="the monitor process back and healthy")
    wait_until(lambda: len(system.sent()) == 6, timeout=20, message="six acknowledgements")
    assert sorted(s["text"].split()[1] for s in system.sent()) == sorted(d for _, d in expected)  # each once
