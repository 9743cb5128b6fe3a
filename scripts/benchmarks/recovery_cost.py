"""The recovery benchmark's last part: our watchdog's own CPU and resident memory while it supervises
sim + bridge + monitors."""
from __future__ import annotations

import argparse
import http.client
import json
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from scripts.benchmarks.recovery_procs import PYTHON, BenchError, Started, config_text, log_tail


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
