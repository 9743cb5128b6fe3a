"""The recovery benchmark's processes and configs: what it starts (each ended by pid with its descendants),
the simulator, the one bridge command line every supervisor runs, and the config they share."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil


ROOT = Path(__file__).resolve().parents[2]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable))
ACCOUNT = "main"
PHONE = "27710000000"
# Our watchdog backs off from the second exit until a child has been healthy for backoff_reset_after
# (default 60 s), and 5 exits in 60 s are a crash loop. A benchmark that kills the same child 20 times a
# minute on purpose sets it below --settle: the analogue of StartLimitIntervalSec=0 on the systemd units.
# Probes and watchdog_sec stay at their defaults.
WATCHDOG_TUNING = {"backoff_reset_after": 0.5}


class BenchError(Exception):
    """A piece is missing or did not come up; the message says which and where to look."""


def clean_env() -> dict[str, str]:
    """Our environment without a systemd notify socket or timers (those belong to whoever started us)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_SOCKET", "WATCHDOG_"))}


class Started:
    """Processes this benchmark started, each ended by pid together with the descendants it had."""

    def __init__(self) -> None:
        self.procs: list[tuple[subprocess.Popen, list[psutil.Process]]] = []

    def start(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(argv, cwd=ROOT, env=env or clean_env(), stdin=subprocess.DEVNULL,
                                    stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((proc, []))
        return proc

    def remember_descendants(self, proc: subprocess.Popen) -> None:
        """Note a supervisor's children now, so they can be ended by pid if it leaves any behind."""
        for i, (p, known) in enumerate(self.procs):
            if p is proc:
                try:
                    self.procs[i] = (p, known + psutil.Process(p.pid).children(recursive=True))
                except psutil.NoSuchProcess:
                    pass

    def stop(self, proc: subprocess.Popen, timeout: float = 20.0) -> None:
        self.remember_descendants(proc)
        entry = next(e for e in self.procs if e[0] is proc)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for child in entry[1]:  # psutil.Process checks the create time, so a reused pid is never hit
            try:
                child.send_signal(signal.SIGCONT)
                child.kill()
                child.wait(5)
            except (psutil.NoSuchProcess, psutil.TimeoutExpired):
                pass
        self.procs.remove(entry)

    def stop_all(self) -> None:
        for proc, _ in reversed(list(self.procs)):
            self.stop(proc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return f"(no log at {path})"
    return f"last lines of {path}:\n    " + "\n    ".join(text) if text else f"({path} is empty)"


def bridge_argv(config: Path) -> list[str]:
    return [PYTHON, "-m", "watchdog.cli", "bridge", "--account", ACCOUNT, "--config", str(config)]


def start_sim(started: Started, config: Path, data_dir: Path, work: Path, timeout: float) -> subprocess.Popen:
    """The simulator as a separate process (supervisord and systemd supervise only the bridge)."""
    log_path = work / "sim.log"
    proc = started.start([PYTHON, "-m", "watchdog.cli", "sim", "--config", str(config)], log_path)
    record_file = data_dir / "run" / "sim.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"wa-watchdog sim exited with code {proc.returncode}; {log_tail(log_path)}")
        try:
            if json.loads(record_file.read_text())["pid"] == proc.pid:
                return proc
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.02)
    raise BenchError(f"wa-watchdog sim published no endpoint in {record_file} within {timeout:g} s; {log_tail(log_path)}")


def group_jid(i: int) -> str:
    return f"1203630000000000{i:02d}@g.us"


def config_text(api_port: int, projects: int, standby: bool = True) -> str:
    """sim + one bridge (+ `projects` monitors); watchdog and probe settings at defaults except WATCHDOG_TUNING."""
    tuning = "".join(f"{k} = {v!r}\n" for k, v in WATCHDOG_TUNING.items())
    groups = "".join(f'\n[[sim.groups]]\njid = "{group_jid(i)}"\nname = "Bench {i}"\nparticipants = ["2771000{i:04d}"]\n'
                     for i in range(1, max(projects, 1) + 1))
    project_tables = "".join(f'\n[[projects]]\nname = "p{i}"\ngroups = ["{group_jid(i)}"]\n' for i in range(1, projects + 1))
    return (f'data_dir = "data"\n\n[watchdog]\ncontrol_port = 0\n{tuning}\n[sim]\nport = 0\n{groups}\n'
            f'[accounts.{ACCOUNT}]\ntransport = "sim"\nphone = "{PHONE}"\napi_port = {api_port}\n'
            f'standby = {str(standby).lower()}\n{project_tables}')


def load_config(path: Path):
    from watchdog.components import load
    return load(path)


def printer() -> Callable[[str], None]:
    def log(message: str) -> None:
        print(f"  {message}", file=sys.stderr, flush=True)
    return log
