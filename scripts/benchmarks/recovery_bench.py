"""`scripts/bench recovery`: kill/hang -> healthy for the same bridge under our watchdog, supervisord and systemd.

One run, one child: `python -m watchdog.cli bridge --account main` on the
simulator, with the bridge API on one fixed free port so every supervisor's
bridge answers on the same URL. Our watchdog runs twice: with a cold restart
(`standby = false`) and with its warm standby (the default), which takes over
without a cold start. For each supervisor:

- SIGKILL the bridge N times (after it has been healthy and settled) and time
  kill -> a *new* pid answers `GET /api/health` 200 (polled every few ms on a
  keep-alive connection);
- SIGSTOP it a few times and time stop -> a new pid is healthy, or report
  that the supervisor never noticed within a bounded wait.

systemd runs as a user manager inside `unshare -m` (the recipe in
shared/SYSTEMD-SANDBOX.md): this script re-executes its systemd part as a
subprocess under `unshare -m` and reads back JSON. Finally our watchdog's own
CPU and resident memory are sampled while it supervises ten children.

Every process started here is ended by pid; every wait has a deadline.
"""
from __future__ import annotations

import argparse
import http.client
import importlib.util
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from scripts.benchmarks.supervisord_conf import write_supervisord_conf

ROOT = Path(__file__).resolve().parents[2]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable))
SYSTEMD = "/lib/systemd/systemd"
PARTS = ("floor", "ours", "supervisord", "systemd", "cost")
ACCOUNT = "main"
PHONE = "27710000000"
POLL_INTERVAL = 0.003  # seconds between health polls
POLL_TIMEOUT = 0.5  # per health request: a stopped bridge accepts the connection but never answers

# Our watchdog backs off from the second exit until a child has been healthy for backoff_reset_after
# (default 60 s), and 5 exits in 60 s are a crash loop. A benchmark that kills the same child 20 times a
# minute on purpose sets it below --settle: the analogue of StartLimitIntervalSec=0 on the systemd units.
# Probes and watchdog_sec stay at their defaults.
WATCHDOG_TUNING = {"backoff_reset_after": 0.5}


class BenchError(Exception):
    """A piece is missing or did not come up; the message says which and where to look."""


@dataclass
class Result:
    supervisor: str
    kills_ms: list[float] = field(default_factory=list)
    hangs_ms: list[float | None] = field(default_factory=list)  # None: never replaced within hang_wait
    hang_wait: float = 0.0
    notes: list[str] = field(default_factory=list)
    error: str = ""


# -- the bridge's health, polled on a keep-alive connection -------------------------------------------

class HealthPoller:
    """GET /api/health on one kept-alive HTTP connection; reconnects after any error."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._conn: http.client.HTTPConnection | None = None

    def get(self) -> tuple[int, dict] | None:
        """(status, body) or None when nothing answered."""
        try:
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=POLL_TIMEOUT)
            self._conn.request("GET", "/api/health")
            response = self._conn.getresponse()
            raw = response.read()
            try:
                body = json.loads(raw)
            except ValueError:
                body = {}
            return response.status, body if isinstance(body, dict) else {}
        except (OSError, http.client.HTTPException):
            self.close()
            return None

    def healthy_pid(self) -> int | None:
        """The pid of a bridge answering 200, else None."""
        answer = self.get()
        if answer and answer[0] == 200 and isinstance(answer[1].get("pid"), int):
            return answer[1]["pid"]
        return None

    def wait_healthy(self, timeout: float, not_pid: int | None = None) -> tuple[int, float] | None:
        """Poll until a bridge with a pid other than `not_pid` answers 200: (pid, monotonic time) or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.healthy_pid()
            if pid is not None and pid != not_pid:
                return pid, time.monotonic()
            time.sleep(POLL_INTERVAL)
        return None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def settled_pid(poller: HealthPoller, settle: float, timeout: float, what: str) -> int:
    """Wait until one bridge pid has answered 200 continuously for `settle` seconds."""
    deadline = time.monotonic() + timeout
    pid, since = None, time.monotonic()
    while time.monotonic() < deadline:
        current = poller.healthy_pid()
        if current is None or current != pid:
            pid, since = current, time.monotonic()
        elif time.monotonic() - since >= settle:
            return pid
        time.sleep(0.02)
    raise BenchError(f"{what}: the bridge was not healthy and settled ({settle:g} s) within {timeout:g} s")


# -- the measurements, the same for every supervisor ----------------------------------------------------

def measure_kills(poller: HealthPoller, kills: int, settle: float, recover_timeout: float, what: str,
                  log: Callable[[str], None]) -> list[float]:
    samples = []
    for i in range(kills):
        pid = settled_pid(poller, settle, recover_timeout, what)
        started = time.monotonic()
        send(pid, signal.SIGKILL, what)
        poller.close()
        back = poller.wait_healthy(recover_timeout, not_pid=pid)
        if back is None:
            raise BenchError(f"{what}: no new healthy bridge within {recover_timeout:g} s of SIGKILL #{i + 1} (pid {pid})")
        samples.append((back[1] - started) * 1000)
        log(f"{what}: kill {i + 1}/{kills}: pid {pid} -> {back[0]} healthy after {samples[-1]:.0f} ms")
    return samples


def measure_hangs(poller: HealthPoller, args: argparse.Namespace, what: str,
                  log: Callable[[str], None], result: Result) -> list[float | None]:
    """SIGSTOP the bridge; a supervisor that never replaces it is tried once (it does not look), then resumed.

    The stop lands at a random (seeded) phase of the bridge's heartbeat period, so neither a lucky nor an
    unlucky phase is measured every time.
    """
    samples: list[float | None] = []
    hangs, wait = args.hangs, args.hang_wait
    phases = random.Random(1)
    for i in range(hangs):
        settle = args.hang_settle + phases.uniform(0, args.hang_phase)
        pid = settled_pid(poller, settle, settle + 30, what)
        started = time.monotonic()
        send(pid, signal.SIGSTOP, what)
        poller.close()
        back = poller.wait_healthy(wait, not_pid=pid)
        if back is None:
            samples.append(None)
            log(f"{what}: hang {i + 1}/{hangs}: pid {pid} stopped, never replaced (waited {wait:g} s); resuming it")
            _resume(pid)
            if i + 1 < hangs:
                result.notes.append(f"hang not detected on try 1 of {hangs}; further tries skipped")
            break
        samples.append((back[1] - started) * 1000)
        if _alive(pid):
            result.notes.append(f"hang {i + 1}: stopped pid {pid} still alive after its replacement was healthy")
            _resume(pid)
        log(f"{what}: hang {i + 1}/{hangs}: pid {pid} -> {back[0]} healthy after {samples[-1]:.0f} ms")
    return samples


def send(pid: int, sig: signal.Signals, what: str) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        raise BenchError(f"{what}: bridge pid {pid} vanished between its health answer and {sig.name}") from None


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _resume(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


def measure(poller: HealthPoller, args: argparse.Namespace, result: Result, log: Callable[[str], None]) -> None:
    what = result.supervisor
    result.notes.append(f"load average {os.getloadavg()[0]:.1f} at its start")
    settled_pid(poller, args.settle, args.start_timeout, what)
    result.kills_ms = measure_kills(poller, args.kills, args.settle, args.recover_timeout, what, log)
    result.hang_wait = args.hang_wait
    result.hangs_ms = measure_hangs(poller, args, what, log, result)


# -- processes we start --------------------------------------------------------------------------------

def start_and_measure(args: argparse.Namespace, result: Result, started: "Started", poller: HealthPoller,
                      argv: list[str], out_path: Path, logs: list[Path], log: Callable[[str], None]) -> None:
    """Start a supervisor, wait until its bridge has settled, then measure; a failed start names its logs."""
    proc = started.start(argv, out_path)
    try:
        settled_pid(poller, args.settle, args.start_timeout, result.supervisor)
    except BenchError as exc:
        state = "running" if proc.poll() is None else f"exited with code {proc.returncode}"
        raise BenchError(f"{exc} ({result.supervisor} {state}); " + "; ".join(log_tail(p) for p in logs)) from None
    measure(poller, args, result, log)


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


# -- configs -------------------------------------------------------------------------------------------

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


# -- supervisor 1: our watchdog ----------------------------------------------------------------------

OURS_COLD, OURS_WARM = "wa-watchdog", "wa-watchdog (warm standby)"


def run_ours(args: argparse.Namespace, work: Path, port: int, log: Callable[[str], None], standby: bool) -> Result:
    """Our watchdog in its own directory: cold restarts (`standby = false`) or its warm standby."""
    result = Result(OURS_WARM if standby else OURS_COLD)
    directory = work / ("ours-warm" if standby else "ours-cold")
    directory.mkdir()
    config = directory / "wa.toml"
    config.write_text(config_text(api_port=port, projects=0, standby=standby))
    started = Started()
    poller = HealthPoller(port)
    log_path = directory / "watchdog.log"
    try:
        start_and_measure(args, result, started, poller, [PYTHON, "-m", "watchdog.cli", "run", "--config", str(config)],
                          log_path, [log_path, config.parent / "data" / "logs" / f"bridge-{ACCOUNT}.log"], log)
    except BenchError as exc:
        result.error = str(exc)
    finally:
        poller.close()
        started.stop_all()
    result.notes.extend(recovery_log_notes(load_config(config).watchdog.recovery_log))
    return result


def recovery_log_notes(path: Path) -> list[str]:
    """Where our time went, from the watchdog's own recovery log: exit -> spawn, and which check caught a hang."""
    try:
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        return [f"recovery log unreadable: {exc}"]
    bridge = [r for r in records if r.get("component") == f"bridge:{ACCOUNT}"]
    spawn_ms = [r["restart_ms"] for r in bridge
                if r.get("event") == "restart" and r.get("cause") == "SIGKILL" and "restart_ms" in r]
    caught = [f"{r['event']} ({r.get('cause', '')})" for r in bridge if r.get("event") in ("hang", "unhealthy")]
    notes = []
    restarts = [r for r in bridge if r.get("event") == "restart"]
    promoted = sum(1 for r in restarts if r.get("standby"))
    if spawn_ms:
        notes.append(f"exit seen -> new bridge {'running' if promoted else 'spawned'}: p50 "
                     f"{percentile(spawn_ms, 50):.1f} ms, max {max(spawn_ms):.1f} ms (restart_ms in the recovery log, "
                     f"n={len(spawn_ms)})")
    if promoted:
        notes.append(f"the warm standby took over {promoted} of {len(restarts)} restarts (the rest: cold starts)")
    if caught:
        notes.append("hangs caught by: " + "; ".join(sorted({c: None for c in caught})))
    return notes


# -- no supervisor: the cold-start floor ------------------------------------------------------------------

def run_floor(args: argparse.Namespace, work: Path, config: Path, port: int, log: Callable[[str], None]) -> Result:
    """Start the bridge ourselves and time exec -> healthy: what any supervisor adds is on top of this."""
    result = Result("none: bridge exec -> healthy (cold-start floor)")
    started = Started()
    poller = HealthPoller(port)
    floor_dir = work / "floor"
    floor_dir.mkdir()
    result.notes.append(f"load average {os.getloadavg()[0]:.1f} at its start")
    try:
        start_sim(started, config, config.parent / "data", floor_dir, args.start_timeout)
        for i in range(args.kills):
            began = time.monotonic()
            proc = started.start(bridge_argv(config), floor_dir / "bridge.log")
            back = poller.wait_healthy(args.recover_timeout)
            if back is None or back[0] != proc.pid:
                raise BenchError(f"{result.supervisor}: bridge pid {proc.pid} not healthy within "
                                 f"{args.recover_timeout:g} s; {log_tail(floor_dir / 'bridge.log')}")
            result.kills_ms.append((back[1] - began) * 1000)
            log(f"floor: start {i + 1}/{args.kills}: pid {proc.pid} healthy after {result.kills_ms[-1]:.0f} ms")
            time.sleep(args.settle)
            started.stop(proc)
            poller.close()
    except BenchError as exc:
        result.error = str(exc)
    finally:
        poller.close()
        started.stop_all()
    return result


# -- supervisor 2: supervisord -----------------------------------------------------------------------

SUPERVISORD_PROGRAM = """\
[program:bridge]
command={command}
directory={root}
autostart=true
autorestart=true
startsecs=0
startretries=1000
stopsignal=TERM
stopwaitsecs=5
redirect_stderr=true
stdout_logfile={work}/bridge-supervisord.log
"""


def run_supervisord(args: argparse.Namespace, work: Path, config: Path, port: int,
                    log: Callable[[str], None]) -> Result:
    result = Result("supervisord")
    started = Started()
    poller = HealthPoller(port)
    sv_dir = work / "supervisord"
    sv_dir.mkdir()
    try:
        if importlib.util.find_spec("supervisor") is None:
            raise BenchError("the `supervisor` package is not installed in this environment")
        import supervisor
        result.supervisor = f"supervisord {getattr(supervisor, '__version__', '') or _dist_version('supervisor')}".strip()
        start_sim(started, config, config.parent / "data", sv_dir, args.start_timeout)
        conf = write_supervisord_conf(sv_dir, SUPERVISORD_PROGRAM.format(work=sv_dir, root=ROOT,
                                                                         command=" ".join(bridge_argv(config))))
        result.notes.append("autorestart=true, startsecs=0")
        start_and_measure(args, result, started, poller, [PYTHON, "-m", "supervisor.supervisord", "-c", str(conf)],
                          sv_dir / "supervisord.out", [sv_dir / "bridge-supervisord.log"], log)
    except BenchError as exc:
        result.error = str(exc)
    finally:
        poller.close()
        started.stop_all()
    return result


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(name)
    except PackageNotFoundError:
        return ""


# -- supervisor 3: a systemd user manager, inside `unshare -m` ----------------------------------------------

UNIT = """\
[Unit]
Description=wa-watchdog recovery benchmark bridge ({variant})
StartLimitIntervalSec=0

[Service]
Type=notify
NotifyAccess=main
ExecStart={command}
WorkingDirectory={root}
Restart=always
{restart_sec}WatchdogSec={watchdog_sec:g}s
TimeoutStartSec=60s
TimeoutStopSec=5s
StandardOutput=append:{log}
StandardError=inherit
"""

SYSTEMD_VARIANTS = (("default", "systemd (RestartSec default 100ms)", ""),
                    ("zero", "systemd (RestartSec=0)", "RestartSec=0\n"))


def run_systemd(args: argparse.Namespace, work: Path, config: Path, port: int,
                log: Callable[[str], None]) -> list[Result]:
    """Re-execute this module's systemd part under `unshare -m`; the simulator runs out here."""
    names = [label for _, label, _ in SYSTEMD_VARIANTS]
    skip = _systemd_unavailable()
    if skip:
        return [Result(name, error=f"skipped: {skip}") for name in names]
    started = Started()
    sd_dir = work / "systemd"
    sd_dir.mkdir()
    spec = sd_dir / "spec.json"
    out = sd_dir / "results.json"
    spec.write_text(json.dumps({"args": vars(args), "work": str(sd_dir), "config": str(config), "port": port,
                                "results": str(out)}, default=str))
    per_variant = args.start_timeout + args.kills * (args.settle + args.recover_timeout / 4) \
        + args.hangs * (args.hang_settle + args.hang_phase + args.hang_wait) + 30
    try:
        start_sim(started, config, config.parent / "data", sd_dir, args.start_timeout)
        worker = subprocess.Popen(["unshare", "-m", PYTHON, "-m", "scripts.benchmarks.recovery_bench",
                                   "--systemd-worker", str(spec)], cwd=ROOT, env=clean_env())
        try:
            worker.wait(per_variant * len(SYSTEMD_VARIANTS) + 30)
        except subprocess.TimeoutExpired:
            worker.terminate()  # the worker stops its units and its manager on SIGTERM
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
            raise BenchError(f"systemd part did not finish within its time limit; see {sd_dir}") from None
        if not out.exists():
            raise BenchError(f"systemd part exited with code {worker.returncode} and wrote no results; "
                             f"{log_tail(sd_dir / 'systemd.log')}")
        return [Result(**r) for r in json.loads(out.read_text())]
    except BenchError as exc:
        return [Result(name, error=str(exc)) for name in names]
    finally:
        started.stop_all()


def _systemd_unavailable() -> str:
    if not Path(SYSTEMD).exists():
        return f"{SYSTEMD} not found"
    if shutil.which("unshare") is None or shutil.which("systemctl") is None:
        return "unshare or systemctl not found"
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True, timeout=10)
    if probe.returncode != 0:
        return f"`unshare -m` is not permitted here ({probe.stderr.strip() or f'exit {probe.returncode}'})"
    return ""


def systemd_worker(spec_path: Path) -> int:
    """Inside `unshare -m`: a private /run, a user manager, one unit per RestartSec variant, measured in turn."""
    spec = json.loads(spec_path.read_text())
    args = argparse.Namespace(**spec["args"])
    work, config, port = Path(spec["work"]), Path(spec["config"]), spec["port"]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # the finally blocks below stop what we started
    log = _printer()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run"], check=True)
    Path("/run/systemd/system").mkdir(parents=True)
    home, runtime = work / "home", work / "xdg-runtime"
    unit_dir = home / ".config" / "systemd" / "user"
    unit_dir.mkdir(parents=True)
    runtime.mkdir(mode=0o700)
    env = {**clean_env(), "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)}
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    watchdog_sec = load_config(config).account(ACCOUNT).watchdog_sec
    for variant, _, restart_sec in SYSTEMD_VARIANTS:
        (unit_dir / f"bench-{variant}.service").write_text(UNIT.format(
            variant=variant, command=" ".join(bridge_argv(config)), root=ROOT, restart_sec=restart_sec,
            watchdog_sec=watchdog_sec, log=work / f"bridge-{variant}.log"))
    started = Started()
    results: list[Result] = []
    try:
        manager = started.start([SYSTEMD, "--user"], work / "systemd.log", env=env)
        systemctl = _systemctl(env)
        deadline = time.monotonic() + 20
        while systemctl("is-system-running").stdout.strip() not in ("running", "degraded"):
            if manager.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"systemd --user did not come up; {log_tail(work / 'systemd.log')}")
            time.sleep(0.05)
        version = subprocess.run(["systemctl", "--version"], capture_output=True, text=True).stdout.split()[1]
        for variant, label, _ in SYSTEMD_VARIANTS:
            result = Result(label.replace("systemd", f"systemd {version}", 1))
            unit = f"bench-{variant}.service"
            poller = HealthPoller(port)
            try:
                systemctl("start", "--no-block", unit)
                try:
                    settled_pid(poller, args.settle, args.start_timeout, result.supervisor)
                except BenchError as exc:
                    raise BenchError(f"{exc}; {log_tail(work / f'bridge-{variant}.log')}") from None
                result.notes.append(f"Type=notify, Restart=always, WatchdogSec={watchdog_sec:g}s, StartLimitIntervalSec=0")
                measure(poller, args, result, log)
                shown = systemctl("show", unit, "-p", "NRestarts").stdout.strip()
                result.notes.append(shown)
            except BenchError as exc:
                result.error = str(exc)
            finally:
                poller.close()
                main_pid = systemctl("show", unit, "-p", "MainPID", "--value").stdout.strip()
                systemctl("stop", unit)
                if main_pid.isdigit() and int(main_pid) > 0 and _alive(int(main_pid)):
                    os.kill(int(main_pid), signal.SIGKILL)
            results.append(result)
    except BenchError as exc:
        results = [Result(label, error=str(exc)) for _, label, _ in SYSTEMD_VARIANTS]
    finally:
        started.stop_all()
        Path(spec["results"]).write_text(json.dumps([asdict(r) for r in results]))
    return 0


def _systemctl(env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess]:
    def run(*words: str) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(["systemctl", "--user", *words], env=env, capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(words, -1, "", "systemctl timed out after 30 s")
    return run


# -- our watchdog's own cost -----------------------------------------------------------------------------

def measure_cost(args: argparse.Namespace, work: Path, log: Callable[[str], None]) -> tuple[str, bool]:
    """CPU % of one core and max RSS of the `wa-watchdog run` process supervising sim + bridge + monitors.

    Returns the report line and whether it was measured.
    """
    cost_dir = work / "cost"
    cost_dir.mkdir()
    config = cost_dir / "wa.toml"
    config.write_text(config_text(api_port=0, projects=args.children - 2))
    started = Started()
    log_path = cost_dir / "watchdog.log"
    try:
        proc = started.start([PYTHON, "-m", "watchdog.cli", "run", "--config", str(config)], log_path)
        deadline = time.monotonic() + args.start_timeout
        status: list[dict] = []
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BenchError(f"wa-watchdog run exited with code {proc.returncode}; {log_tail(log_path)}")
            status = _control_status(cost_dir / "data")
            if len(status) >= args.children and all(c.get("healthy") for c in status):
                break
            time.sleep(0.1)
        healthy = sum(1 for c in status if c.get("healthy"))
        watchdog = psutil.Process(proc.pid)
        children = len(watchdog.children())
        if children < args.children:
            raise BenchError(f"watchdog has {children} children, expected {args.children}; {log_tail(log_path)}")
        log(f"cost: {children} children ({healthy} healthy per /status); sampling {args.cost_seconds:g} s")
        time.sleep(args.settle)
        before, started_at = watchdog.cpu_times(), time.monotonic()
        rss = []
        while time.monotonic() - started_at < args.cost_seconds:
            rss.append(watchdog.memory_info().rss)
            time.sleep(1.0)
        after, elapsed = watchdog.cpu_times(), time.monotonic() - started_at
        cpu = ((after.user + after.system) - (before.user + before.system)) / elapsed * 100
        alive = len(watchdog.children())
        return (f"wa-watchdog itself, supervising {children} children ({healthy} healthy): "
                f"{cpu:.2f}% of one core, RSS {max(rss) / 2**20:.1f} MB max (sampled {elapsed:.0f} s; "
                f"{alive} children still up at the end; targets < 1% and < 60 MB)"), True
    except (BenchError, psutil.NoSuchProcess) as exc:
        return f"wa-watchdog resource use: not measured: {exc}", False
    finally:
        started.stop_all()


def _control_status(data_dir: Path) -> list[dict]:
    from watchdog.shared import endpoints
    url = endpoints.url(data_dir, "watchdog", "control")
    if not url:
        return []
    host_port = url.split("://", 1)[-1].rstrip("/")
    conn = http.client.HTTPConnection(host_port, timeout=2)
    try:
        conn.request("GET", "/status")
        body = json.loads(conn.getresponse().read())
    except (OSError, ValueError, http.client.HTTPException):
        return []
    finally:
        conn.close()
    components = body.get("components", body) if isinstance(body, dict) else body
    return components if isinstance(components, list) else []


# -- report ----------------------------------------------------------------------------------------------

def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _ms(value: float) -> str:
    return f"{value:.0f} ms"


def hang_cell(result: Result) -> str:
    if not result.hangs_ms:
        return "-"
    done = [h for h in result.hangs_ms if h is not None]
    if not done:
        return f"never (waited {result.hang_wait:g} s)"
    cell = f"p50 {percentile(done, 50) / 1000:.2f} s, max {max(done) / 1000:.2f} s (n={len(done)})"
    missed = len(result.hangs_ms) - len(done)
    return cell + (f", {missed} never" if missed else "")


def report(results: list[Result], cost: str, command: str, args: argparse.Namespace) -> str:
    ours = next((r for r in results if r.supervisor == OURS_COLD and r.kills_ms), None)
    ours_p50 = percentile(ours.kills_ms, 50) if ours else None
    lines = ["| supervisor | kill->healthy p50 | p95 | max | p50 vs ours | hang->healthy |",
             "|---|---|---|---|---|---|"]
    for r in results:
        if not r.kills_ms:
            reason = (r.error or "no samples").splitlines()[0].replace("|", "/")
            lines.append(f"| {r.supervisor} | - | - | - | - | {reason[:160]} |")
            continue
        p50 = percentile(r.kills_ms, 50)
        ratio = f"{p50 / ours_p50:.2f}x" if ours_p50 else "-"
        lines.append(f"| {r.supervisor} | {_ms(p50)} | {_ms(percentile(r.kills_ms, 95))} | {_ms(max(r.kills_ms))} "
                     f"| {ratio} | {hang_cell(r)} |")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    notes = [f"- {r.supervisor}: {'; '.join(r.notes + ([r.error] if r.error else []))}"
             for r in results if r.notes or r.error]
    return "\n".join([
        *lines, "",
        f"{args.kills} SIGKILLs per supervisor, each after {args.settle:g} s of steady health; time from the kill "
        f"until a new pid answers GET /api/health 200 (polled every {POLL_INTERVAL * 1000:g} ms, keep-alive); "
        f"p95 is nearest-rank. The floor row is exec -> healthy of the bridge started by hand, no supervisor. "
        f"Hang: SIGSTOP once the bridge has been up {args.hang_settle:g} s (past the probes' initial_delay) plus a "
        f"random part of its {args.hang_phase:g} s heartbeat period, then the same wait, up to {args.hang_wait:g} s, "
        f"{args.hangs} tries (one, if the first is never noticed). "
        f"Ratio = that supervisor's p50 / ours with cold restarts (row `{OURS_COLD}`, `standby = false`; above 1 = "
        f"slower). `{OURS_WARM}`: the default `standby = true`, a second bridge already loaded and blocked on the "
        f"session lock takes over (its notes say for how many restarts).",
        f"Same child everywhere: `{' '.join(bridge_argv(Path('CONFIG')))}` on `wa-watchdog sim`. "
        f"wa-watchdog config: probes and watchdog_sec at defaults; "
        + ", ".join(f"{k} = {v}" for k, v in WATCHDOG_TUNING.items()) + " (healthy that long resets backoff; --settle is longer).",
        *notes, "",
        *([cost, ""] if cost else []),
        f"Machine: {os.cpu_count()} CPUs, load average {load} at the end. Command: `{command}`",
    ])


def _printer() -> Callable[[str], None]:
    def log(message: str) -> None:
        print(f"  {message}", file=sys.stderr, flush=True)
    return log


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench recovery --", description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs per supervisor (default 20)")
    parser.add_argument("--hangs", type=int, default=3, help="SIGSTOP tries per supervisor (default 3)")
    parser.add_argument("--hang-wait", type=float, default=15.0, help="give up on a hang after this many s (default 15)")
    parser.add_argument("--settle", type=float, default=1.0, help="healthy this long before each kill (default 1 s)")
    parser.add_argument("--start-timeout", type=float, default=60.0, help="first start deadline (default 60 s)")
    parser.add_argument("--recover-timeout", type=float, default=20.0, help="kill -> healthy deadline (default 20 s)")
    parser.add_argument("--children", type=int, default=10, help="children for the cost sample (default 10)")
    parser.add_argument("--cost-seconds", type=float, default=20.0, help="cost sampling time (default 20 s)")
    parser.add_argument("--only", action="append", choices=PARTS,
                        help="run only these parts (repeatable; default all)")
    parser.add_argument("--output", type=Path, help="also write the markdown report to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs) and print it")
    parser.add_argument("--systemd-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.kills < 1 or args.hangs < 0 or args.children < 2:
        parser.error("--kills must be >= 1, --hangs >= 0, --children >= 2")
    return args


def _missing_pieces(parts: set[str]) -> list[str]:
    needed = {"bridge.main": "wa-watchdog bridge", "bridge.simulator.server": "wa-watchdog sim"}
    if parts & {"ours", "cost"}:
        needed["watchdog.core.arbiter"] = "wa-watchdog run"
    if "cost" in parts:
        needed["monitors.main"] = "wa-watchdog monitor"
    return [f"{command} ({module} not found)" for module, command in needed.items()
            if importlib.util.find_spec(module) is None]


@contextmanager
def workspace(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="wa-recovery-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.systemd_worker:
        return systemd_worker(args.systemd_worker)
    parts = set(args.only or PARTS)
    missing = _missing_pieces(parts)
    if missing:
        print(f"recovery benchmark: missing pieces: {'; '.join(missing)}", file=sys.stderr)
        return 1
    log = _printer()
    command = "scripts/bench recovery" + (" -- " + " ".join(argv) if argv else "")
    with workspace(args.keep) as work:
        port = free_port()
        config = work / "wa.toml"
        config.write_text(config_text(api_port=port, projects=0))
        account = load_config(config).account(ACCOUNT)
        # probes start initial_delay after a (re)start: a hang is only fair to time once they run
        args.hang_settle = max(args.settle, account.probe.initial_delay + account.probe.period)
        args.hang_phase = account.watchdog_sec / 2  # the bridge's heartbeat period
        log(f"bridge api on 127.0.0.1:{port}; work dir {work}")
        results: list[Result] = []
        if "ours" in parts:
            results.append(run_ours(args, work, port, log, standby=False))
            results.append(run_ours(args, work, port, log, standby=True))
        if "supervisord" in parts:
            results.append(run_supervisord(args, work, config, port, log))
        if "systemd" in parts:
            results.extend(run_systemd(args, work, config, port, log))
        if "floor" in parts:
            results.append(run_floor(args, work, config, port, log))
        cost, cost_ok = measure_cost(args, work, log) if "cost" in parts else ("", True)
        text = report(results, cost, command, args)
    print(text)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")
    return 0 if cost_ok and all(not r.error or r.error.startswith("skipped") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
