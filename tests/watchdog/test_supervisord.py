"""The shipped conf/supervisor/wa-watchdog.conf under a real supervisord (the `supervisor` package).

For operators who run supervisord: it starts the watchdog, restarts it when it is
killed (and the new watchdog takes the session over from the old one's bridge: one
owner, always), stops everything on `supervisorctl stop`, and does not restart a
configuration error.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from bridge.session_lock import holder_pid
from scripts.benchmarks.supervisord_conf import write_supervisord_conf
from tests.conftest import BASE_CONFIG, ROOT, wait_until
from tests.watchdog.test_system import EXPECTED, status
from watchdog.shared import endpoints



class Supervisord:
    def __init__(self, work: Path, config: Path) -> None:
        self.work = work
        (work / "conf.d").mkdir(parents=True)
        self.conf = write_supervisord_conf(work, f"[include]\nfiles = {work}/conf.d/*.conf\n")
        shipped = (ROOT / "conf/supervisor/wa-watchdog.conf").read_text(encoding="utf-8")
        program = (shipped.replace("/opt/wa-watchdog/.venv/bin/wa-watchdog", str(Path(sys.executable).parent / "wa-watchdog"))
                   .replace("/etc/wa-watchdog/config.toml", str(config))
                   .replace("/var/log/wa-watchdog", str(work)))
        assert program != shipped
        (work / "conf.d/wa-watchdog.conf").write_text(program + f"directory={ROOT}\n", encoding="utf-8")
        self.proc = subprocess.Popen([sys.executable, "-m", "supervisor.supervisord", "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def ctl(self, *args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c", str(self.conf), *args],
                                capture_output=True, text=True, timeout=60)
        return result.stdout + result.stderr

    def log(self) -> str:
        try:
            return (self.work / "supervisord.log").read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # supervisord stops its program (SIGTERM, stopwaitsecs) before exiting
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def supervisord(config_path: Path, tmp_path: Path) -> Iterator[Supervisord]:
    sd = Supervisord(tmp_path / "supervisor", config_path)
    yield sd
    sd.stop()


def system_up(data_dir: Path) -> dict[str, dict] | None:
    components = status(data_dir)
    return components if all(components.get(name, {}).get("healthy") for name in EXPECTED) else None


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.slow
def test_supervisord_runs_restarts_and_stops_the_watchdog_with_one_session_owner(supervisord: Supervisord,
                                                                                 data_dir: Path) -> None:
    first = wait_until(lambda: system_up(data_dir), 60, message="the system up under supervisord")
    watchdog_pid = endpoints.read(data_dir, "watchdog")["pid"]
    assert f"pid {watchdog_pid}" in supervisord.ctl("status", "wa-watchdog")
    old_children = [c["pid"] for c in first.values()]

    os.kill(watchdog_pid, signal.SIGKILL)  # its children live on in their own process groups...
    second = wait_until(lambda: (c := system_up(data_dir)) and endpoints.read(data_dir, "watchdog")["pid"] != watchdog_pid
                        and all(c[n]["pid"] not in old_children for n in EXPECTED) and c, 60,
                        message="supervisord to restart the watchdog and the new one to run its own system")
    # ...until the new watchdog stopped them: one bridge owns the session, and it is the new watchdog's.
    assert all(gone(pid) for pid in old_children)
    session = data_dir / "accounts/main/session"
    assert holder_pid(session) == second["bridge:main"]["pid"]
    assert "exited: wa-watchdog (terminated by SIGKILL; not expected)" in supervisord.log()

    pids = [c["pid"] for c in second.values()] + [c["standby_pid"] for c in second.values() if c.get("standby_pid")]
    assert "stopped" in supervisord.ctl("stop", "wa-watchdog").lower()
    wait_until(lambda: all(gone(pid) for pid in pids), 30, message="every component stopped with the watchdog")
    assert holder_pid(session) is None
    assert "stopped: wa-watchdog (exit status 0)" in supervisord.log()


@pytest.mark.slow
def test_a_configuration_error_is_not_restarted_by_supervisord(supervisord: Supervisord, config_path: Path,
                                                                data_dir: Path) -> None:
    wait_until(lambda: system_up(data_dir), 60, message="the system up under supervisord")
    assert "stopped" in supervisord.ctl("stop", "wa-watchdog").lower()
    config_path.write_text(BASE_CONFIG.replace("api_port = 0", "api_prot = 0"), encoding="utf-8")
    supervisord.ctl("start", "wa-watchdog")
    wait_until(lambda: "exited: wa-watchdog (exit status 2; expected)" in supervisord.log(), 30,
               message="the watchdog to exit 2 on the bad key")
    assert "EXITED" in supervisord.ctl("status", "wa-watchdog")
    assert supervisord.log().count("spawned: 'wa-watchdog'") == 2  # the first run and this one: no retry
    assert "accounts.main.api_prot: unknown key" in (supervisord.work / "watchdog.log").read_text(encoding="utf-8")
