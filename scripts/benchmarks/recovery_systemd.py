"""The recovery benchmark under a systemd user manager, inside `unshare -m` (the recipe in
shared/SYSTEMD-SANDBOX.md): `run_systemd` re-executes `recovery_bench --systemd-worker` there and reads back
JSON; the simulator runs out here."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from scripts.benchmarks.recovery_measure import HealthPoller, Result, alive, measure, settled_pid
from scripts.benchmarks.recovery_procs import (ACCOUNT, PYTHON, ROOT, BenchError, Started, bridge_argv, clean_env,
                                               load_config, log_tail, printer, start_sim)


SYSTEMD = "/lib/systemd/systemd"
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
    log = printer()
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
                if main_pid.isdigit() and int(main_pid) > 0 and alive(int(main_pid)):
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
