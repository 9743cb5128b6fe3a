"""How truthful are the recorded outage windows? kill -9 the bridge (warm standby, then cold restarts) and
disconnect it from the simulator, N times each, under `wa-watchdog run`; compare each recorded window with
the real outage: start vs the kill / the cut, recorded downtime vs kill -> reconnected. Beside it, the error
the heartbeat alone would give (the crash window's start before issue 10: the last heartbeat, now
`accounts/main/session/bridge.alive`).

`scripts/bench windows [-- --rounds N]`.
"""
from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from bridge.alive import read_alive
from bridge.schema import parse_ts
from scripts.benchmarks.system_run import RunningSystem, config_text, wait_for


def _store(system: RunningSystem) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{system.data_dir / 'accounts/main/messages.db'}?mode=ro", uri=True)


def _ts(text: str) -> float:
    return parse_ts(text).timestamp()


def _closed_after(system: RunningSystem, known: int) -> tuple[float, float] | None:
    with _store(system) as conn:
        rows = conn.execute("SELECT started_at, ended_at FROM disconnect_windows WHERE id > ? AND ended_at IS NOT NULL "
                            "AND reason != 'bridge stopped' ORDER BY id", (known,)).fetchall()
    return (_ts(rows[0][0]), _ts(rows[0][1])) if rows else None


def _last_id(system: RunningSystem) -> int:
    with _store(system) as conn:
        return conn.execute("SELECT COALESCE(MAX(id), 0) FROM disconnect_windows").fetchone()[0]


def _connected_after(system: RunningSystem, moment: float) -> float:
    with _store(system) as conn:
        times = [_ts(at) for (at,) in conn.execute("SELECT at FROM connection_events WHERE kind = 'connected'")]
    return min(t for t in times if t > moment)


def _alive_at(system: RunningSystem) -> float:
    path = system.data_dir / "accounts/main/session/bridge.alive"
    return _ts(wait_for(lambda: read_alive(path), 5, "a readable heartbeat").at)  # its writer is alive: retry


def _ready(system: RunningSystem, standby: bool) -> dict:
    def up() -> dict | None:
        bridge = next((c for c in system.status() if c["name"] == "bridge:main"), None)
        return bridge if bridge and bridge["healthy"] and (bridge.get("standby_pid") or not standby) else None
    bridge = wait_for(up, 60, "the bridge healthy")
    time.sleep(1.2)  # let the standby reach the lock and a heartbeat age randomly (a measurement pause, not a wait)
    return bridge


def crashes(rounds: int, standby: bool) -> list[tuple[float, float, float]]:
    """(start error, downtime error, heartbeat start error) in ms per kill -9."""
    found = []
    with tempfile.TemporaryDirectory(prefix="wa-bench-windows-") as tmp:
        system = RunningSystem(Path(tmp), config_text(1).replace('api_port = 0\n', 'api_port = 0\nstandby = '
                                                                 f'{str(standby).lower()}\n', 1))
        system.start()
        try:
            for _ in range(rounds):
                bridge = _ready(system, standby)
                known, heartbeat = _last_id(system), _alive_at(system)
                killed_at = time.time()
                os.kill(bridge["pid"], signal.SIGKILL)
                started, ended = wait_for(lambda: _closed_after(system, known), 60, "the crash window closed")
                real = _connected_after(system, killed_at) - killed_at
                found.append(((started - killed_at) * 1000, ((ended - started) - real) * 1000,
                              (heartbeat - killed_at) * 1000))
        finally:
            system.stop()
    return found


def disconnects(rounds: int) -> list[tuple[float, float]]:
    """(start error, downtime error) in ms per server disconnect."""
    found = []
    with tempfile.TemporaryDirectory(prefix="wa-bench-windows-") as tmp:
        system = RunningSystem(Path(tmp), config_text(1))
        system.start()
        try:
            for _ in range(rounds):
                _ready(system, True)
                known = _last_id(system)
                cut_at = time.time()
                system.disconnect(reason="bench")
                started, ended = wait_for(lambda: _closed_after(system, known), 60, "the disconnect window closed")
                real = _connected_after(system, cut_at) - cut_at
                found.append(((started - cut_at) * 1000, ((ended - started) - real) * 1000))
        finally:
            system.stop()
    return found


def _cell(values: list[float]) -> str:
    return f"{statistics.median(values):+.1f} / {max(values, key=abs):+.1f}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench windows")
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args(argv)
    print(f"{args.rounds} rounds each; errors in ms as median / worst (recorded minus real)\n")
    print("| outage | window start | recorded downtime | heartbeat start (before) |")
    print("|---|---|---|---|")
    for name, standby in (("kill -9, warm standby", True), ("kill -9, cold restart", False)):
        rows = crashes(args.rounds, standby)
        print(f"| {name} | {_cell([r[0] for r in rows])} | {_cell([r[1] for r in rows])} | "
              f"{_cell([r[2] for r in rows])} |", flush=True)
    rows = disconnects(args.rounds)
    print(f"| server disconnect | {_cell([r[0] for r in rows])} | {_cell([r[1] for r in rows])} | - |")
    return 0
