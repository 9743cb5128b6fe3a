"""`scripts/bench cluster`: two hosts watching one number (issue 21) on a throwaway PostgreSQL (fsync on) and one
simulator: the steady state, and what host A's loss costs.

Steady state: drops posted at `--rate` into both hosts; post -> commit of the drop's row (the simulator's
timestamp to `pg_xact_commit_timestamp` of its first drop_events row) p50/p99; then `--idle` seconds of
nothing: CPU of each host's whole tree and of PostgreSQL's, and the database's transactions per second (each
statement is one, autocommit: the lease's renewals and standby's looks, and whatever else the hosts ask at idle).
Faults (each on fresh hosts and a fresh database; A holds the sender lease, drops posted at `--rate`
throughout): A's whole tree killed (kill -9: its connections are reset) or paused (SIGSTOP: nothing closed), or
(as root, in network namespaces: scripts/benchmarks/cluster_lab.py) A cut off from PostgreSQL, its packets dropped silently.
Measured from the fault: when B holds the lease and when B's device sends its first acknowledgement; the ingest
gap (post -> commit of the drops posted after the fault, which only B records); acknowledgements duplicated and
feedback `unknown`; the sends A may have made at the fault, as B decided them (monitors/fate.py: its copy found,
sent, or unknown) and how long after B got the lease. Targets: first ack <= 1 s after a kill, <= lease_s + 1 s after a pause; post -> commit p99
<= 100 ms; 0 duplicated, 0 unknown.
"""
from __future__ import annotations

import argparse
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bridge.schema import parse_ts
from scripts.benchmarks.cluster_run import Poster, bench_postgres, holder, postgres_bin, signal_tree, tree, two_hosts
from scripts.benchmarks.drop_latency import percentile
from scripts.benchmarks.scale_bench import cpu_seconds
from scripts.benchmarks.system_run import RunningSystem, group_jid, wait_for
from tests.pg import PgCluster
from watchdog.components import load
from watchdog.shared.recovery_log import RecoveryLog

P99_TARGET_MS = 100.0
KILL_TARGET_S = 1.0


@dataclass
class Fault:
    name: str
    lease_s: float
    lease_s_after: float = 0.0  # fault -> B holds the lease
    first_ack_s: float = 0.0  # fault -> B's device sends an acknowledgement
    after_ms: list[float] = field(default_factory=list)  # post -> commit of the drops posted after the fault
    duplicated: int = 0
    unknown: int = 0
    doubts: Counter = field(default_factory=Counter)  # sends A may have made, as B decided them (monitors/fate.py)
    decided_s: float = 0.0  # B's lease -> its last decision on them (recovery-log times)

    @property
    def target_s(self) -> float:
        return KILL_TARGET_S if self.name == "kill -9" else self.lease_s + 1.0  # a silent A: its lease runs out


def commit_ms(system: RunningSystem, drops: list[str]) -> list[float]:
    """Post -> commit of each drop's first drop_events row (never updated, so its xmin is the recording's)."""
    rows = system.query("drops", "SELECT d.drop_number, d.message_time, pg_xact_commit_timestamp(e.xmin) FROM drops d "
                                 "JOIN drop_events e ON e.drop_id = d.id AND e.kind = 'submitted'")
    wanted = set(drops)
    return [(parse_ts(committed) - parse_ts(posted)).total_seconds() * 1000
            for drop, posted, committed in rows if drop in wanted]


def all_recorded(system: RunningSystem, count: int) -> None:
    wait_for(lambda: system.query("drops", "SELECT COUNT(*) FROM feedback WHERE status = 'sent'") == [(count,)],
             120, f"all {count} drops recorded and acknowledged")


def steady(work: Path, url: str, pg: PgCluster, args: argparse.Namespace) -> str:
    a, b = two_hosts(work, url, args.lease_s)
    try:
        poster = Poster(a, args.rate)
        poster.post(args.drops)
        all_recorded(a, args.drops)
        latencies = commit_ms(a, poster.posted)
        postgres = [psutil.Process(pg.postmaster_pid() or 0)]
        postgres += postgres[0].children(recursive=True)
        trees = {"host A": tree(a), "host B": tree(b), "PostgreSQL": postgres}
        before = {name: cpu_seconds(processes) for name, processes in trees.items()}
        xacts_before, began = transactions(a), time.monotonic()
        time.sleep(args.idle)  # the idle span measured
        span = time.monotonic() - began
        xacts = (transactions(a) - xacts_before) / span
        cpu = {name: sum(cpu_seconds(processes).values()) - sum(before[name].values())
               for name, processes in trees.items()}
    finally:
        b.stop()
        a.stop()
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    lines = ["| steady state (two hosts) | value | target |", "|---|---|---|",
             f"| drop post -> commit, {len(latencies)} drops at {args.rate:g}/s | p50 {p50:.1f} ms, p99 {p99:.1f} ms "
             f"| p99 <= {P99_TARGET_MS:g} ms {'**yes**' if p99 <= P99_TARGET_MS else '**no**'} |"]
    lines += [f"| idle CPU, {name} ({span:.0f} s) | {used / span * 100:.2f} % | |" for name, used in cpu.items()]
    lines.append(f"| database transactions/s at idle, both hosts (lease_s {args.lease_s:g}): the lease's "
                 f"statements and any other | {xacts:.1f} | |")
    return "\n".join(lines)


def transactions(system: RunningSystem) -> int:
    rows = system.query("drops", "SELECT xact_commit + xact_rollback FROM pg_stat_database "
                                 "WHERE datname = current_database()")
    return int(rows[0][0])


def fates(b: RunningSystem) -> tuple[Counter, float]:
    """B's decisions on the sends A may have made (found / send / unknown), and how long after B got the lease the
    last one came (both times from B's recovery log)."""
    records = list(RecoveryLog(load(b.config_path).watchdog.recovery_log).read())
    decided = [r for r in records if r.get("event") == "feedback_fate"]
    leased = [r["time"] for r in records if r.get("event") == "lease" and r.get("account") == "main"
              and r.get("change") in ("acquired", "taken_over")]
    last = max((r["time"] for r in decided), default=None)
    return Counter(r["outcome"] for r in decided), (last - min(leased)) if last is not None and leased else 0.0


def run_fault(a: RunningSystem, b: RunningSystem, url: str, name: str, blow: Callable[[], Callable[[], None]],
              args: argparse.Namespace) -> Fault:
    """`blow` strikes host A and returns what undoes it (run at the end)."""
    result = Fault(name, args.lease_s)
    poster = Poster(a, args.rate)
    undo: Callable[[], None] = lambda: None  # noqa: E731
    try:
        poster.post(int(args.rate * 3))
        before = len(poster.posted)
        posting = threading.Thread(target=poster.post, args=(int(args.rate * args.after),))
        posting.start()
        undo = blow()
        at = time.monotonic()
        leased: list[float] = []

        def b_sent() -> bool:
            if not leased and holder(url) == "vps-b":
                leased.append(time.monotonic() - at)
            return any(s["node"] == "vps-b" for s in a.sent())

        wait_for(b_sent, 60, "B to send an acknowledgement", interval=0.02)
        result.first_ack_s = time.monotonic() - at
        result.lease_s_after = leased[0] if leased else result.first_ack_s
        posting.join()
        all_recorded(a, len(poster.posted))
        result.after_ms = commit_ms(a, poster.posted[before:])
        acks = Counter(s["text"].split()[1] for s in a.sent() if s["recipient"] == group_jid(1))
        result.duplicated = sum(n - 1 for n in acks.values() if n > 1)
        result.unknown = a.query("drops", "SELECT COUNT(*) FROM feedback WHERE status = 'unknown'")[0][0]
        result.doubts, result.decided_s = fates(b)
    finally:
        undo()
        b.stop()
        a.stop()
    return result


def signalled(a: RunningSystem, signum: int) -> Callable[[], Callable[[], None]]:
    def blow() -> Callable[[], None]:
        processes = tree(a)
        signal_tree(processes, signum)
        return lambda: signal_tree(processes, signal.SIGCONT)
    return blow


def host_fault(work: Path, pg: PgCluster, tag: str, name: str, signum: int, args: argparse.Namespace) -> Fault:
    """A's tree killed or paused: two hosts as process trees."""
    url = pg.create_database(f"cluster_{tag}")
    a, b = two_hosts(work / tag, url, args.lease_s)
    return run_fault(a, b, url, name, signalled(a, signum), args)


def partition_fault(work: Path, bin_dir: Path, args: argparse.Namespace) -> Fault | str:
    """A cut off from PostgreSQL (silently) in its own network namespace; or why it could not run."""
    from scripts.benchmarks.cluster_lab import LabUnavailable, cluster_lab
    try:
        with cluster_lab(work / "partition", bin_dir, args.lease_s, durable=True,
                         settings="-c track_commit_timestamp=on") as lab:
            def blow() -> Callable[[], None]:
                lab.a.host.cut(lab.a.host.outside, lab.pg.port)
                return lambda: lab.a.host.cut(lab.a.host.outside, lab.pg.port, cut=False)
            return run_fault(lab.a, lab.b, lab.pg_url, "A cut off from PostgreSQL", blow, args)
    except LabUnavailable as exc:
        return f"partition case skipped: {exc}"


def fault_table(faults: list[Fault]) -> str:
    lines = ["| fault of host A (lease_s) | B holds the lease after | B's first ack after | target | ingest after the fault: post -> commit "
             "p50 / p99 | duplicated | unknown | sends in doubt: found / sent / unknown (last decided after B's lease) |",
             "|---|---|---|---|---|---|---|---|"]
    for f in faults:
        ok = "**yes**" if f.first_ack_s <= f.target_s else "**no**"
        lines.append(f"| {f.name} ({f.lease_s:g} s) | {f.lease_s_after:.2f} s | {f.first_ack_s:.2f} s | <= {f.target_s:g} s {ok} | "
                     f"{percentile(f.after_ms, 50):.0f} / {percentile(f.after_ms, 99):.0f} ms "
                     f"({len(f.after_ms)} drops) | {f.duplicated} | {f.unknown} | {f.doubts['found']} / "
                     f"{f.doubts['send']} / {f.doubts['unknown']} ({f.decided_s:.2f} s) |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--drops", type=int, default=100, help="drops posted in the steady state (default 100)")
    parser.add_argument("--rate", type=float, default=5.0, help="drops posted per second (default 5)")
    parser.add_argument("--idle", type=float, default=30.0, help="idle span measured, seconds (default 30)")
    parser.add_argument("--after", type=float, default=10.0, help="seconds of drops posted after a fault (10)")
    parser.add_argument("--lease-s", type=float, default=5.0, help="[cluster] lease_s (default 5, the product's)")
    args = parser.parse_args(argv)
    if (bin_dir := postgres_bin()) is None:
        return 0
    with bench_postgres(bin_dir, "wa-bench-cluster-", settings="-c track_commit_timestamp=on") as (pg, work):
        print(steady(work / "steady", pg.create_database("cluster_steady"), pg, args), flush=True)
        faults = [host_fault(work, pg, tag, name, signum, args)
                  for tag, name, signum in (("kill", "kill -9", signal.SIGKILL), ("stop", "SIGSTOP", signal.SIGSTOP))]
        partition = partition_fault(work, bin_dir, args)
        if isinstance(partition, str):
            print(f"\n({partition})")
        else:
            faults.append(partition)
    print("\n" + fault_table(faults))
    return int(any(f.first_ack_s > f.target_s or f.duplicated or f.unknown for f in faults))
