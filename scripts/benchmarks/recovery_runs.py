"""The recovery benchmark's runs without systemd: our watchdog (cold restarts and warm standby), the
cold-start floor (no supervisor), and supervisord."""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from scripts.benchmarks.recovery_measure import HealthPoller, Result, percentile, start_and_measure
from scripts.benchmarks.recovery_procs import (ACCOUNT, PYTHON, ROOT, BenchError, Started, bridge_argv, config_text,
                                               load_config, log_tail, start_sim)
from scripts.benchmarks.supervisord_conf import write_supervisord_conf


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
