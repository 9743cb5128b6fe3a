"""`scripts/bench drops`: simulator post -> drop row latency with six projects running under `wa-watchdog run`.

Drops are posted one at a time through `POST /sim/inject`, round robin over
the six projects' groups, `--interval` apart. A drop's latency is its row's
`detected_at` minus its `message_time` (the simulator's timestamp of the
post): simulator -> websocket -> bridge commit -> monitor woken by inotify
(then data_version) -> drops.db. Targets: p50 < 50 ms, p99 < 250 ms.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bridge.store import parse_ts
from scripts.benchmarks.system_run import CONTRACTORS, RunningSystem, config_text, group_jid, wait_for

PROJECTS = 6
TARGETS_MS = {"p50": 50.0, "p99": 250.0}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def post_drops(system: RunningSystem, projects: int, drops: int, interval: float, first: int = 5000000) -> list[float]:
    """Post `drops` drops round robin over the projects' groups, `interval` apart; their latencies in ms."""
    numbers = [f"DR{first + i}" for i in range(drops)]
    for i, number in enumerate(numbers):
        system.inject(group_jid(i % projects + 1), CONTRACTORS[i % len(CONTRACTORS)], f"{number} installed")
        time.sleep(interval)
    marks = ",".join("?" * len(numbers))
    sql = f"SELECT message_time, detected_at FROM drops WHERE drop_number IN ({marks})"
    wait_for(lambda: len(system.query("drops", sql, *numbers)) == drops, 60, "every drop recorded")
    return [(parse_ts(detected) - parse_ts(posted)).total_seconds() * 1000
            for posted, detected in system.query("drops", sql, *numbers)]


def measure(workdir: Path, drops: int, interval: float) -> list[float]:
    """Latencies in ms of `drops` drops posted into a freshly started six-project system."""
    system = RunningSystem(workdir, config_text(PROJECTS))
    system.start()
    try:
        return post_drops(system, PROJECTS, drops, interval)
    finally:
        system.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench drops", description=__doc__.splitlines()[0])
    parser.add_argument("--drops", type=int, default=300, help="drops to post (default 300)")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between posts (default 0.02)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="wa-drops-bench-") as tmp:
        latencies = measure(Path(tmp), args.drops, args.interval)
    values = {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99)}
    ok = all(values[k] <= TARGETS_MS[k] for k in TARGETS_MS)
    print(f"{len(latencies)} drops, {PROJECTS} projects (6 monitors under wa-watchdog run), one every "
          f"{args.interval * 1000:.0f} ms\n")
    print("| metric | value | target | ok |\n|---|---|---|---|")
    for key in ("p50", "p99"):
        print(f"| drop latency {key} (sim post -> drop row) | {values[key]:.1f} ms | < {TARGETS_MS[key]:.0f} ms | "
              f"{'yes' if values[key] <= TARGETS_MS[key] else 'NO'} |")
    print(f"| drop latency mean / max | {statistics.mean(latencies):.1f} / {max(latencies):.1f} ms | | |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
