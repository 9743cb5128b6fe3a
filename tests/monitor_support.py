"""Helpers for the monitor tests: start monitors and bridges, read drops.db, run the ops commands."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from monitors.drops_store import open_drops_store
from tests.bridge_support import call, health
from tests.conftest import ROOT, Processes, wait_until
from watchdog.shared import endpoints
from watchdog.components import Config


def start_monitor(procs: Processes, project: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    log = open(procs.config_path.parent / f"monitor-{project}-{len(procs.started)}.log", "wb")
    return procs.start("monitor", "--project", project, env=env, stdout=subprocess.DEVNULL, stderr=log)


def start_account_bridge(procs: Processes, data_dir: Path, account: str) -> tuple[subprocess.Popen, str]:
    """Start the bridge of `account` and wait until it is connected; returns it and its API URL."""
    log = open(data_dir.parent / f"bridge-{account}-{len(procs.started)}.log", "wb")
    proc = procs.start("bridge", "--account", account, stdout=subprocess.DEVNULL, stderr=log)

    def published() -> str | None:
        record = endpoints.read(data_dir, f"bridge:{account}")
        return record["endpoints"]["api"] if record and record["pid"] == proc.pid else None
    url = wait_until(published, timeout=15, message=f"bridge:{account} to publish its API")
    wait_until(lambda: health(url).get("state") == "connected", timeout=15, message=f"bridge:{account} to connect")
    return proc, url


def query(data_dir: Path, sql: str, *params: object) -> list[tuple]:
    """Rows from drops.db ([] while it or its tables do not exist yet)."""
    path = data_dir / "drops.db"
    if not path.exists():
        return []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
        try:
            return list(conn.execute(sql, params))
        except sqlite3.OperationalError:
            return []


def store_rows(config: Config, sql: str, *params: object) -> list[tuple]:
    """Rows from the configured drops store (drops.db or PostgreSQL), `?` placeholders on both."""
    drops = open_drops_store(config)
    try:
        return drops.db.rows(sql, params)
    finally:
        drops.close()


def store_run(config: Config, sql: str, *params: object) -> None:
    """A write to the configured drops store, e.g. to stage a crash's leftovers."""
    drops = open_drops_store(config)
    try:
        with drops.db.transaction() as tx:
            tx.run(sql, params)
    finally:
        drops.close()


def all_sent(sim_url: str) -> list[dict]:
    """Everything every bridge sent through the simulator."""
    return call("GET", f"{sim_url}/sim/sent")[1]  # type: ignore[return-value]


def cli(config_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "watchdog.cli", args[0], "--config", str(config_path), *args[1:]],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
