"""`wa-watchdog logs`: log files merged in time order across rotations, --lines, --since, -f, bad input."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from tests.conftest import ROOT, wait_until
from watchdog.shared.logs import line_time, stamp
from watchdog.shared import clock


def line(name: str, pid: int, when: float, text: str) -> str:
    return stamp(name, pid, f"INFO    {text}", when)


def write_logs(data_dir: Path, now: float) -> None:
    logs = data_dir / "logs"
    logs.mkdir(parents=True)
    (logs / "bridge-main.log.1").write_text(line("bridge:main", 10, now - 3600, "old, rotated") + "\n")
    (logs / "bridge-main.log").write_text("\n".join([
        line("bridge:main", 10, now - 30, "connected"),
        line("bridge:main/standby", 11, now - 20, "standby pid 11: waiting for session"),
        line("bridge:main", 10, now - 5, "stored 3 new of 3 messages"),
    ]) + "\n")
    (logs / "watchdog.log").write_text("\n".join([
        line("watchdog", 1, now - 25, "bridge:main standby started, pid 11"),
        line("watchdog", 1, now - 1, "all well"),
    ]) + "\n")
    (logs / "monitor-lawley.log").write_text(line("monitor:lawley", 12, now - 10, "DR1234567 recorded") + "\n"
                                             + "Traceback (most recent call last):\n")


def logs(config_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "watchdog.cli", "logs", "--config", str(config_path), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)


def test_logs_are_merged_in_time_order_with_their_names(config_path: Path, data_dir: Path) -> None:
    now = clock.now_s()
    write_logs(data_dir, now)
    result = logs(config_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    names = [o.split(" ")[2] if line_time(o) else o.split(" ")[0] for o in out]
    assert names == ["bridge:main[10]", "bridge:main[10]", "watchdog[1]", "bridge:main/standby[11]",
                     "monitor:lawley[12]", "monitor:lawley", "bridge:main[10]", "watchdog[1]"]
    assert out[0].endswith("old, rotated")  # from the rotated file
    assert out[5] == "monitor:lawley | Traceback (most recent call last):"  # unstamped: named, kept in place
    times = [line_time(o) for o in out if line_time(o) is not None]
    assert times == sorted(times)

    assert logs(config_path, "--lines", "2").stdout.splitlines() == out[-2:]
    only = logs(config_path, "bridge:main", "--since", "10m").stdout.splitlines()  # not the hour-old rotated line
    assert [o.split("INFO    ")[1] for o in only] == ["connected", "standby pid 11: waiting for session",
                                                      "stored 3 new of 3 messages"]


def test_an_unknown_component_or_bad_since_is_a_clear_error(config_path: Path, data_dir: Path) -> None:
    write_logs(data_dir, clock.now_s())
    result = logs(config_path, "bridge:nope")
    assert result.returncode == 1
    assert "no component named bridge:nope; did you mean bridge:main? (components: watchdog, sim, bridge:main, " \
           "monitor:lawley" in result.stderr
    result = logs(config_path, "--since", "yesterday")
    assert result.returncode == 1 and "--since 'yesterday'" in result.stderr and "Traceback" not in result.stderr


def test_follow_prints_new_lines_also_after_a_rotation(config_path: Path, data_dir: Path) -> None:
    write_logs(data_dir, clock.now_s())
    proc = subprocess.Popen([sys.executable, "-m", "watchdog.cli", "logs", "--config", str(config_path), "-f",
                             "bridge:main"], cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True,
                            # Ctrl-C live, as at an operator's terminal: a run started in the background by a
                            # non-interactive shell inherits SIGINT ignored, and then `logs -f` never hears it
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("stored 3 new" in s for s in seen), message="the tail before following")
        path = data_dir / "logs" / "bridge-main.log"
        with open(path, "a") as f:
            f.write(line("bridge:main", 10, clock.now_s(), "live one") + "\n")
        wait_until(lambda: any("live one" in s for s in seen), message="a line appended while following")
        os.replace(path, path.with_name("bridge-main.log.1"))
        path.write_text(line("bridge:main", 13, clock.now_s(), "after rotation") + "\n")
        wait_until(lambda: any("after rotation" in s for s in seen), message="a line in the new file")
    finally:
        os.kill(proc.pid, signal.SIGINT)
        # A deadline, not a speed: a CI pass on a machine loaded with cluster tests once took over 10 s here.
        proc.wait(timeout=30)
        proc.stdout.close()
    assert sum("live one" in s for s in seen) == 1
