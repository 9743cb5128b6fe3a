"""`scripts/bench webhooks`: simulator post -> signed `drop.recorded` webhook received, under `wa-watchdog run`.

A whole system (simulator, bridge, six monitors, drops-api) supervised by the
watchdog; drops are posted one at a time round robin over the projects. For
each drop the receiver (a real aiohttp server verifying the signature with
the Standard Webhooks reference library) notes when the event arrived; the
latency is that minus the simulator's timestamp of the post. Side by side,
in the same run: the drop row's latency (detected_at), so the ratio is what
the outbox and delivery add. Target: webhook p50 <= 100 ms.

Then the system idles, and drops-api's CPU time over `--idle` seconds is read
from /proc/<pid>/schedstat (what its deliverer costs while nothing happens).
`--postgres` puts the drops store in a throwaway PostgreSQL server.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import psutil

from bridge.schema import parse_ts
from scripts.benchmarks.drop_latency import percentile
from scripts.benchmarks.scale_bench import cpu_seconds
from scripts.benchmarks.system_run import CONTRACTORS, RunningSystem, config_text, group_jid, slow_start, wait_for
from scripts.benchmarks.webhook_receiver import WebhookReceiver
from tests.pg import PgCluster, find_bin_dir

PROJECTS = 6
TARGET_P50_MS = 100.0
IDLE_SETTLE = 3.0  # seconds from the last webhook to the idle window (retries, settle looks, checkpoints end)


def idle_cpu(system: RunningSystem, seconds: float) -> float:
    """drops-api's CPU time over `seconds` of an idle system, in % of one core."""
    pid = system.pid("drops-api")
    assert pid is not None, "drops-api is not running"
    time.sleep(IDLE_SETTLE)
    process = psutil.Process(pid)
    before, began = cpu_seconds([process])[pid], time.monotonic()
    time.sleep(seconds)  # the idle window measured
    return 100 * (cpu_seconds([process])[pid] - before) / (time.monotonic() - began)


def measure(workdir: Path, drops: int, interval: float, idle: float,
            database_url: str = "") -> tuple[list[float], list[float], float]:
    receiver = WebhookReceiver()
    receiver.start()
    system = RunningSystem(workdir, slow_start(config_text(PROJECTS, database_url=database_url))
                           + receiver.config("bench", ["drop.recorded"]), database_url=database_url)
    system.start()
    try:
        for i in range(drops):
            system.inject(group_jid(i % PROJECTS + 1), CONTRACTORS[i % len(CONTRACTORS)], f"DR{6000000 + i} installed")
            time.sleep(interval)
        wait_for(lambda: len(receiver.accepted()) >= drops, 60, "every drop.recorded webhook")
        rows = system.query("drops", "SELECT drop_number, message_time, detected_at FROM drops")
        cpu = idle_cpu(system, idle)
    finally:
        system.stop()
        receiver.close()
    arrived = {body["data"]["drop"]["drop_number"]: next(r.at for r in receiver.requests if r.event_id == event_id)
               for event_id, body in receiver.events().items()}
    webhook = [(arrived[number] - parse_ts(posted).timestamp()) * 1000 for number, posted, _ in rows]
    row = [(parse_ts(detected) - parse_ts(posted)).total_seconds() * 1000 for _, posted, detected in rows]
    return webhook, row, cpu


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench webhooks", description=__doc__.splitlines()[0])
    parser.add_argument("--drops", type=int, default=200, help="drops to post (default 200)")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between posts (default 0.05)")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle CPU measured (default 20)")
    parser.add_argument("--postgres", action="store_true", help="the drops store in a throwaway PostgreSQL")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="wa-webhook-bench-") as tmp, ExitStack() as cleanup:
        url = ""
        if args.postgres:
            bin_dir, why = find_bin_dir()
            if bin_dir is None:
                print(f"--postgres: {why}")
                return 2
            cluster = PgCluster(bin_dir)
            cleanup.callback(cluster.destroy)
            cluster.start()
            url = cluster.create_database("webhook_bench")
        webhook, row, cpu = measure(Path(tmp), args.drops, args.interval, args.idle, url)
    p50 = percentile(webhook, 50)
    print(f"{len(webhook)} drops, {PROJECTS} projects under wa-watchdog run, one every {args.interval * 1000:.0f} ms; "
          f"drops store {'PostgreSQL' if url else 'drops.db'}; signed drop.recorded webhooks verified by the receiver\n")
    print("| metric | p50 | p99 | mean | target | ok |\n|---|---|---|---|---|---|")
    print(f"| sim post -> webhook received | {p50:.1f} ms | {percentile(webhook, 99):.1f} ms | "
          f"{statistics.mean(webhook):.1f} ms | p50 <= {TARGET_P50_MS:.0f} ms | {'yes' if p50 <= TARGET_P50_MS else 'NO'} |")
    print(f"| sim post -> drop row (same run) | {percentile(row, 50):.1f} ms | {percentile(row, 99):.1f} ms | "
          f"{statistics.mean(row):.1f} ms | | |")
    print(f"| webhook / row, p50 | {p50 / max(percentile(row, 50), 0.001):.1f}x | | | | |")
    print(f"\ndrops-api idle CPU over {args.idle:g} s: {cpu:.2f} % of one core")
    return 0 if p50 <= TARGET_P50_MS else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
