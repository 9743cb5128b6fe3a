"""`scripts/bench drops`: simulator post -> drop row latency with six projects running under `wa-watchdog run`,
with the drops store in drops.db and in PostgreSQL, side by side in one run.

Drops are posted one at a time through `POST /sim/inject`, round robin over
the six projects' groups, `--interval` apart. A drop's latency is its row's
`detected_at` minus its `message_time` (the simulator's timestamp of the
post): simulator -> websocket -> bridge commit -> the monitor, woken by
inotify, starts the recording transaction. For PostgreSQL the
run also reports post -> commit (the row visible to the web app), from
`pg_xact_commit_timestamp` of its first drop_events row. The PostgreSQL server is a throwaway one
(tests/pg.py) with fsync on, on this machine. Targets: drops.db p50 < 50 ms,
p99 < 250 ms; PostgreSQL (post -> commit) p50 <= 30 ms, p99 <= 100 ms.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bridge.schema import parse_ts
from scripts.benchmarks.system_run import CONTRACTORS, RunningSystem, config_text, group_jid, wait_for

PROJECTS = 6
TARGETS_MS = {"sqlite": {"p50": 50.0, "p99": 250.0}, "postgres": {"p50": 30.0, "p99": 100.0}}
NAMES = {"sqlite": "drops.db", "postgres": "PostgreSQL"}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def measure(workdir: Path, drops: int, interval: float, database_url: str = "") -> dict[str, list[float]]:
    """Latencies in ms of `drops` drops posted into a freshly started six-project system:
    {"detected": post -> recording starts} and, on PostgreSQL, {"committed": post -> commit}."""
    system = RunningSystem(workdir, config_text(PROJECTS, database_url=database_url), database_url)
    system.start()
    try:
        for i in range(drops):
            system.inject(group_jid(i % PROJECTS + 1), CONTRACTORS[i % len(CONTRACTORS)], f"DR{5000000 + i} installed")
            time.sleep(interval)
        wait_for(lambda: system.query("drops", "SELECT COUNT(*) FROM drops") == [(drops,)], 60, "every drop recorded")
        # The commit that recorded the drop: its first drop_events row is never updated (the drops row is,
        # when its feedback is answered, and an UPDATE gives the row a new xmin).
        committed = ", pg_xact_commit_timestamp(e.xmin)" if database_url else ""
        rows = system.query("drops", f"SELECT d.message_time, d.detected_at{committed} FROM drops d "
                                     "JOIN drop_events e ON e.drop_id = d.id AND e.kind = 'submitted'")
    finally:
        system.stop()
    names = ("detected", "committed") if database_url else ("detected",)
    return {name: [(parse_ts(row[i + 1]) - parse_ts(row[0])).total_seconds() * 1000 for row in rows]
            for i, name in enumerate(names)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench drops", description=__doc__.splitlines()[0])
    parser.add_argument("--drops", type=int, default=300, help="drops to post per store (default 300)")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between posts (default 0.02)")
    parser.add_argument("--store", choices=("both", "sqlite", "postgres"), default="both")
    args = parser.parse_args(argv)
    stores = ["sqlite", "postgres"] if args.store == "both" else [args.store]
    results: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="wa-drops-bench-") as tmp:
        for store in stores:
            if store == "sqlite":
                for kind, latencies in measure(Path(tmp) / store, args.drops, args.interval).items():
                    results[(store, kind)] = latencies
                continue
            from tests.pg import PgCluster, find_bin_dir
            bin_dir, why = find_bin_dir()
            if bin_dir is None:
                print(f"PostgreSQL skipped: {why}")
                continue
            cluster = PgCluster(bin_dir, durable=True, settings="-c track_commit_timestamp=on")
            try:
                cluster.start()
                url = cluster.create_database("bench")
                for kind, latencies in measure(Path(tmp) / store, args.drops, args.interval, url).items():
                    results[(store, kind)] = latencies
            finally:
                cluster.destroy()
    print(f"{args.drops} drops per store, {PROJECTS} projects (6 monitors under wa-watchdog run), one every "
          f"{args.interval * 1000:.0f} ms\n")
    print("| store | latency | p50 | p99 | mean | max | target p50 / p99 | ok |\n|---|---|---|---|---|---|---|---|")
    ok = True
    for (store, kind), latencies in results.items():
        values = {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99)}
        target = TARGETS_MS[store] if (store, kind) in (("sqlite", "detected"), ("postgres", "committed")) else None
        good = target is None or all(values[k] <= target[k] for k in values)
        ok &= good
        print(f"| {NAMES[store]} | post -> {kind} | {values['p50']:.1f} ms | {values['p99']:.1f} ms | "
              f"{statistics.mean(latencies):.1f} ms | {max(latencies):.1f} ms | "
              + (f"{target['p50']:.0f} / {target['p99']:.0f} ms | {'yes' if good else 'NO'} |" if target else "| |"))
    if ("sqlite", "detected") in results and ("postgres", "detected") in results:
        ratio = percentile(results[("postgres", "detected")], 50) / percentile(results[("sqlite", "detected")], 50)
        print(f"\nPostgreSQL / drops.db p50 ratio (post -> detected): {ratio:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
