"""`scripts/bench fate`: a send in flight when host A dies (issue 21, monitors/fate.py), with the product's
`copy_grace_s` (10 s) and `lease_s` (5 s), two hosts on one simulator and a throwaway PostgreSQL (fsync on).

A's monitor hands an acknowledgement to A's bridge, then A's whole tree is killed before the "sent" mark:
- "answer lost": A's bridge sent it, WhatsApp's answer never came back (`/sim/withhold`): B should find the
  copy its own device received and send nothing;
- "never sent": A's bridge (and watchdog) were frozen when the post came: B should see no copy and send it
  once, `copy_grace_s` after it met the doubt.
Measured: B's verdict and how it matched, its decision after B got the lease (recovery-log times), kill -> the
row marked sent, and how often the acknowledgement reached the group (target 1) and from B's device.
"""
from __future__ import annotations

import argparse
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from scripts.benchmarks.cluster_run import (Poster, ack_row, bench_postgres, kill_tree, postgres_bin, sent_of,
                                            signal_tree, two_hosts, watchdog_and_bridge, withhold)
from scripts.benchmarks.system_run import RunningSystem, wait_for
from tests.pg import PgCluster
from watchdog.components import load
from watchdog.shared.recovery_log import RecoveryLog

CASES = ("answer lost", "never sent")


@dataclass(frozen=True)
class Run:
    case: str
    verdict: str
    matched_by: str
    decided_s: float  # B's lease -> its verdict
    marked_s: float  # A killed -> the row marked sent
    in_group: int
    by_b: int


def in_flight(a: RunningSystem, poster: Poster, case: str) -> str:
    """Post a drop and leave its acknowledgement in flight at A as `case` says; the drop number."""
    if case == "answer lost":
        withhold(a, "vps-a", True)
        poster.post(1)
        wait_for(lambda: sent_of(a, poster.posted[-1]), 30, "A's bridge to send the acknowledgement")
    else:
        signal_tree(watchdog_and_bridge(a), signal.SIGSTOP)
        poster.post(1)
        wait_for(lambda: (ack_row(a, poster.posted[-1])[0], ack_row(a, poster.posted[-1])[2]) == ("pending", "vps-a"),
                 30, "A's monitor to hand the acknowledgement to its frozen bridge")
    return poster.posted[-1]


def one(work: Path, pg: PgCluster, case: str, args: argparse.Namespace) -> Run:
    a, b = two_hosts(work / case.replace(" ", "-"), pg.create_database(f"fate_{case.replace(' ', '_')}"),
                     args.lease_s)
    poster = Poster(a)
    try:
        poster.post(1)
        wait_for(lambda: ack_row(a, poster.posted[-1])[0] == "sent", 30, "A to send the first acknowledgement")
        drop = in_flight(a, poster, case)
        killed = time.monotonic()
        kill_tree(a)
        wait_for(lambda: ack_row(a, drop)[0] == "sent", 120, "B to settle the acknowledgement")
        marked = time.monotonic() - killed
        records = list(RecoveryLog(load(b.config_path).watchdog.recovery_log).read())
        leased = min(r["time"] for r in records if r.get("event") == "lease" and r.get("account") == "main")
        [fate] = [r for r in records if r.get("event") == "feedback_fate"]
        sent = sent_of(a, drop)
        return Run(case, fate["outcome"], fate.get("matched_by") or "-", fate["time"] - leased, marked, len(sent),
                   sum(s["node"] == "vps-b" for s in sent))
    finally:
        b.stop()
        a.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench fate", description=__doc__.splitlines()[0])
    parser.add_argument("--lease-s", type=float, default=5.0, help="[cluster] lease_s (default 5, the product's)")
    args = parser.parse_args(argv)
    if (bin_dir := postgres_bin()) is None:
        return 0
    with bench_postgres(bin_dir, "wa-bench-fate-") as (pg, work):
        runs = [one(work, pg, case, args) for case in CASES]
    print(f"| A's send at the kill (lease_s {args.lease_s:g}, copy_grace_s 10) | B's verdict | matched by | decided "
          "after B's lease | kill -> marked sent | in the group (target 1) | sent by B |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {r.case} | {r.verdict} | {r.matched_by} | {r.decided_s:.2f} s | {r.marked_s:.2f} s | {r.in_group} | "
              f"{r.by_b} |")
    wrong = [r for r in runs if r.in_group != 1 or r.by_b != (r.case == "never sent")]
    return int(bool(wrong))
