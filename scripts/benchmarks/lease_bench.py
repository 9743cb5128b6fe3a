"""`scripts/bench lease`: the sender lease (issue 21) on a throwaway PostgreSQL: what its statements cost, and
how soon a standby holds the lease after its holder dies (kill -9: its connection is reset) or goes silent
(SIGSTOP: nothing is reset, the lease must run out).

The holder is a child process holding the lease as a monitor does (`SenderLease`, renewing every
lease_s * RENEW_FRACTION); the standby looks every TAKE_OVER_EVERY, as the monitors' LeaseKeeper does.
Targets (issue 21): a dead holder's lease taken over within 1 s; a silent one within lease_s + 1 s.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from monitors.store.lease import RENEW_FRACTION, TAKE_OVER_EVERY, SenderLease
from scripts.benchmarks.drop_latency import percentile
from tests.pg import PgCluster, find_bin_dir

HOLDER = """import sys, time
from monitors.store.lease import RENEW_FRACTION, SenderLease
lease = SenderLease(sys.argv[1], "wa_watchdog", "main", "vps-a", float(sys.argv[2]))
print(lease.acquire(), flush=True)
while lease.renew():
    time.sleep(lease.lease_s * RENEW_FRACTION)
"""


def statement_ms(url: str, runs: int) -> tuple[list[float], list[float]]:
    """Latencies of RENEW by the holder and of a refused ACQUIRE by a standby (the steady state's statements)."""
    holder, standby = (SenderLease(url, "wa_watchdog", "main", node, 5.0) for node in ("vps-a", "vps-b"))
    try:
        holder.acquire()
        renew, refused = [], []
        for _ in range(runs):
            begun = time.perf_counter()
            holder.renew()
            renew.append((time.perf_counter() - begun) * 1000)
            begun = time.perf_counter()
            standby.acquire()
            refused.append((time.perf_counter() - begun) * 1000)
        holder.release()
        return renew, refused
    finally:
        holder.close()
        standby.close()


def takeover_s(url: str, lease_s: float, signum: int) -> float:
    """Seconds from `signum` to the holder child until a standby looking every TAKE_OVER_EVERY holds the lease."""
    child = subprocess.Popen([sys.executable, "-c", HOLDER, url, str(lease_s)], stdout=subprocess.PIPE, text=True)
    standby = SenderLease(url, "wa_watchdog", "main", "vps-b", lease_s)
    try:
        child.stdout.readline()  # type: ignore[union-attr]
        assert standby.acquire() is None  # connected and looking, as a running standby is
        os.kill(child.pid, signum)
        begun = time.monotonic()
        while standby.acquire() is None:
            time.sleep(TAKE_OVER_EVERY)
        taken = time.monotonic() - begun
        standby.release()
        return taken
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()  # type: ignore[union-attr]
        standby.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench lease")
    parser.add_argument("--runs", type=int, default=500, help="statements timed")
    parser.add_argument("--takeovers", type=int, default=5, help="takeovers timed per fault")
    parser.add_argument("--lease-s", type=float, default=5.0)
    args = parser.parse_args(argv)
    bin_dir, why = find_bin_dir()
    if bin_dir is None:
        print(f"skipped: {why}")
        return 0
    cluster = PgCluster(bin_dir, durable=True)
    try:
        cluster.start()
        url = cluster.create_database("lease_bench")
        renew, refused = statement_ms(url, args.runs)
        print("| statement | p50 ms | p99 ms |\n|---|---|---|")
        print(f"| RENEW (holder, every {args.lease_s * RENEW_FRACTION:g} s) | {percentile(renew, 50):.2f} | "
              f"{percentile(renew, 99):.2f} |")
        print(f"| ACQUIRE refused (standby, every {TAKE_OVER_EVERY:g} s) | {percentile(refused, 50):.2f} | "
              f"{percentile(refused, 99):.2f} |")
        print(f"\n| fault (lease_s {args.lease_s:g}) | takeover s, each run | worst | target |\n|---|---|---|---|")
        status = 0
        for name, signum, target in (("kill -9 of the holder", signal.SIGKILL, 1.0),
                                     ("SIGSTOP of the holder", signal.SIGSTOP, args.lease_s + 1.0)):
            taken = [takeover_s(url, args.lease_s, signum) for _ in range(args.takeovers)]
            print(f"| {name} | {' '.join(f'{t:.2f}' for t in taken)} | {max(taken):.2f} | <= {target:g} |")
            status |= max(taken) > target
        return status
    finally:
        cluster.destroy()
