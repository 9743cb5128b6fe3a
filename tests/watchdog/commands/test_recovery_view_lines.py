"""`wa-watchdog recoveries` as a real subprocess over a real recovery log file."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from watchdog.shared.recovery_log import RecoveryLog
from watchdog.shared import clock


def recoveries(config_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TZ": "UTC"}
    return subprocess.run([sys.executable, "-m", "watchdog.cli", "recoveries", "--config", str(config_path), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)


@pytest.fixture
def log(data_dir: Path) -> RecoveryLog:
    return RecoveryLog(data_dir / "recoveries.jsonl")


def backdate(log: RecoveryLog, seconds: float) -> None:
    """Move every record so far `seconds` into the past (the log only ever appends 'now')."""
    records = [{**r, "time": r["time"] - seconds} for r in log.read()]
    log.path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def write_incidents(log: RecoveryLog) -> None:
    log.append("bridge:main", "exit", cause="SIGKILL", pid=100)
    log.append("bridge:main", "restart", pid=100, new_pid=101, cause="SIGKILL", delay_ms=0, restart_ms=3)
    log.append("bridge:main", "healthy", pid=101, downtime_ms=410)
    log.append("monitor:lawley", "exit", cause="exit code 1", pid=200)  # interleaved with the bridge's hang
    log.append("bridge:main", "hang", cause="no heartbeat for 3.0 s", pid=101)
    log.append("bridge:main", "alert", rule="hang", status="firing", summary="no heartbeat for 3.0 s")
    log.append("bridge:main", "exit", cause="SIGKILL", signal="SIGKILL", pid=101)  # the watchdog's own kill
    log.append("monitor:lawley", "restart", pid=200, new_pid=201, cause="exit code 1", delay_ms=0, restart_ms=5)
    log.append("bridge:main", "restart", pid=101, new_pid=102, cause="hang", delay_ms=0, restart_ms=2100)
    log.append("monitor:lawley", "healthy", pid=201, downtime_ms=620)
    log.append("bridge:main", "healthy", pid=102, downtime_ms=2600)
    log.append("bridge:main", "disconnect", message="server closed the connection", reason="server")
    log.append("bridge:main", "backfill", message="window 22:07:01-22:07:40: 3 messages recovered")
    log.append("monitor:mohadin", "exit", cause="exit code 2", pid=300)
    log.append("monitor:mohadin", "failed", cause="configuration error (exit code 2)")
    # an operator restart: the watchdog stops the child, starts it again, sees it healthy
    log.append("bridge:main", "stop", pid=102, message="ended by exit code 0", cause="operator restart")
    log.append("bridge:main", "restart", pid=102, new_pid=103, cause="operator restart", delay_ms=0, restart_ms=240)
    log.append("bridge:main", "healthy", pid=103, cause="operator restart", downtime_ms=700)
    # kill -9 with a warm standby waiting: it takes over
    log.append("bridge:main", "exit", cause="SIGKILL", signal="SIGKILL", pid=103)
    log.append("bridge:main", "restart", pid=103, new_pid=104, cause="SIGKILL", delay_ms=0, restart_ms=0.1,
               standby=True)
    log.append("bridge:main", "healthy", pid=104, cause="SIGKILL", downtime_ms=22)
    log.append("watchdog", "stop", pid=50, message="every component stopped")


def test_one_readable_line_per_recovery(config_path: Path, log: RecoveryLog) -> None:
    write_incidents(log)
    done = recoveries(config_path)
    assert done.returncode == 0, done.stderr
    lines = [line.split(" ", 1)[1] for line in done.stdout.splitlines() if not line.startswith("--")]
    assert lines == [
        "bridge:main killed by SIGKILL · restarted in 3 ms · healthy after 0.41 s",
        "monitor:lawley exited with code 1 · restarted in 5 ms · healthy after 0.62 s",
        "bridge:main hang (no heartbeat for 3.0 s) · restarted in 2.1 s · healthy after 2.6 s",
        "bridge:main alert firing hang: no heartbeat for 3.0 s",
        "bridge:main disconnect: server closed the connection (reason: server)",
        "bridge:main backfill: window 22:07:01-22:07:40: 3 messages recovered",
        "monitor:mohadin exited with code 2 · failed, not restarted: configuration error (exit code 2)",
        "bridge:main stopped (pid 102, operator restart): ended by exit code 0 · restarted in 0.24 s"
        " · healthy after 0.70 s",
        "bridge:main killed by SIGKILL · restarted in 0 ms by its warm standby · healthy after 22 ms",
        "watchdog stopped (pid 50): every component stopped",
    ]
    first = done.stdout.splitlines()[1]
    assert first[:8] == time.strftime("%H:%M:%S", time.gmtime(next(log.read())["time"]))


@pytest.mark.slow
def test_filter_by_component_and_since(config_path: Path, log: RecoveryLog) -> None:
    log.append("bridge:main", "exit", cause="SIGKILL", pid=100)
    backdate(log, 2 * 3600)
    log.append("bridge:main", "exit", cause="SIGTERM", pid=101)
    log.append("monitor:lawley", "exit", cause="exit code 1", pid=200)

    recent = recoveries(config_path, "--since", "1h", "--component", "bridge:main")
    assert recent.returncode == 0, recent.stderr
    assert "killed by SIGTERM" in recent.stdout
    assert "SIGKILL" not in recent.stdout and "monitor:lawley" not in recent.stdout
    assert "SIGKILL" in recoveries(config_path, "--since", "3h").stdout
    assert "SIGKILL" in recoveries(config_path, "--since", "1d").stdout

    nothing = recoveries(config_path, "--since", "30s", "--component", "sim")
    assert nothing.returncode == 0 and "no recoveries for sim in the last 30s" in nothing.stdout


def test_an_unknown_component_gets_a_did_you_mean(config_path: Path, log: RecoveryLog) -> None:
    write_incidents(log)
    for asked, meant in (("bridge", "bridge:main"), ("monitor:lawly", "monitor:lawley")):
        done = recoveries(config_path, "--component", asked)
        assert done.returncode == 1 and done.stdout == "", done.stdout
        assert f"wa-watchdog recoveries: no component named {asked}; did you mean {meant}?" in done.stderr


def operator_restart_with_a_standby(log: RecoveryLog) -> None:
    """As the log holds it: the standby's reconnect is appended before the watchdog's stop record, which is
    dated when the stop began; then one report per project on the window."""
    began = clock.now_s() - 1.0
    log.append("bridge:main", "reconnect", cause="bridge stopped", downtime_ms=58,
               message="window 13:32:35-13:32:35 (bridge stopped) closed after 58 ms", at=began + 0.1)
    log.append("bridge:main", "backfill", cause="bridge stopped", recovered=0, late=0, status="done", window_id=1,
               message="window 13:32:35-13:32:35 (bridge stopped): done, 0 recovered from history, 0 delivered late",
               at=began + 0.11)
    log.append("bridge:main", "stop", pid=10, message="ended by exit code 0", cause="operator restart", at=began)
    log.append("bridge:main", "restart", pid=10, new_pid=11, cause="operator restart", restart_ms=142, standby=True,
               at=began + 0.14)
    log.append("bridge:main", "healthy", pid=11, cause="operator restart", downtime_ms=160, at=began + 0.16)
    for n, project in enumerate(("lawley", "mohadin", "velo")):
        log.append(f"monitor:{project}", "backfill", cause="bridge stopped", window_id=1, account="main",
                   recovered=0, late=0, drops=[], at=began + 2.5 + n / 100,
                   message="window 13:32:35-13:32:35 (bridge stopped): in its groups 0 recovered from history, "
                           "0 delivered late; no drops")


def test_an_operator_restart_reads_in_order_and_quiet_projects_are_one_line(config_path: Path,
                                                                            log: RecoveryLog) -> None:
    operator_restart_with_a_standby(log)
    done = recoveries(config_path)
    assert done.returncode == 0, done.stderr
    lines = [line.split(" ", 1)[1] for line in done.stdout.splitlines() if not line.startswith("--")]
    assert lines == [
        "bridge:main stopped (pid 10, operator restart): ended by exit code 0 · restarted in 0.14 s by its warm "
        "standby · healthy after 0.16 s",
        "bridge:main reconnect: window 13:32:35-13:32:35 (bridge stopped) closed after 58 ms",
        "bridge:main backfill: window 13:32:35-13:32:35 (bridge stopped): done, 0 recovered from history, "
        "0 delivered late",
        "monitors backfill: window 13:32:35-13:32:35 (bridge stopped): 3 projects missed nothing "
        "(lawley, mohadin, velo)",
    ]


def test_json_prints_the_raw_records(config_path: Path, log: RecoveryLog) -> None:
    write_incidents(log)
    done = recoveries(config_path, "--json", "--component", "monitor:lawley")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [r for r in log.read() if r["component"] == "monitor:lawley"]
    assert [r["event"] for r in json.loads(done.stdout)] == ["exit", "restart", "healthy"]


def test_a_bad_since_says_what_is_expected(config_path: Path, log: RecoveryLog) -> None:
    done = recoveries(config_path, "--since", "yesterday")
    assert done.returncode == 1
    assert "expected a number and a unit s, m, h or d (e.g. 30s, 15m, 1h, 2d)" in done.stderr
    assert "Traceback" not in done.stderr


def test_no_log_yet_is_not_an_error(config_path: Path, log: RecoveryLog) -> None:
    done = recoveries(config_path)
    assert done.returncode == 0 and f"no recoveries (log: {log.path})" in done.stdout


def test_a_crash_looping_component_is_never_called_healthy(config_path: Path, log: RecoveryLog) -> None:
    """Each process comes up (READY) and dies again: 'healthy after' would be a lie until one stays up."""
    for pid in (300, 301, 302):
        log.append("monitor:lawley", "exit", cause="exit code 1", pid=pid)
        if pid == 301:
            log.append("monitor:lawley", "crash_loop", cause="3 exits in 60 s", backoff_s=30, pid=pid)
        log.append("monitor:lawley", "restart", pid=pid, new_pid=pid + 1, cause="exit code 1", delay_ms=0,
                   restart_ms=4)
        log.append("monitor:lawley", "healthy", pid=pid + 1, downtime_ms=2300)
    done = recoveries(config_path)
    assert done.returncode == 0, done.stderr
    lines = [line.split(" ", 1)[1] for line in done.stdout.splitlines() if not line.startswith("--")]
    assert "healthy" not in done.stdout, done.stdout
    assert lines[0].startswith("monitor:lawley exited with code 1 · restarted in 4 ms · up after 2.3 s, ended again "
                               "after ") and lines[0].endswith(" (crash loop)")
    assert lines[-1] == ("monitor:lawley exited with code 1 · restarted in 4 ms · up after 2.3 s, "
                         "not yet stable (crash loop)")
