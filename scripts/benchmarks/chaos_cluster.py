"""`scripts/chaos --cluster [--minutes N] [--kill-every S] [--seed K]`: the cluster's faults (issue 21), mixed at random.

Two hosts (scripts/benchmarks/cluster_run.py: two `wa-watchdog run` trees, one simulator, one throwaway
PostgreSQL) while drops are posted at `--rate` throughout; every S seconds on average one blow: `kill` a host's
whole tree (kill -9) and start it again, `pause` a host's tree (SIGSTOP) for lease_s to 3 lease_s and resume it,
`restart` a host (a clean stop and start: an upgrade), `postgres` restarted (fast or immediate shutdown). A host
is struck only while the other is up (a cluster of two survives one host's loss, not both). Then posting stops
and the run waits, with a deadline, for every drop to be recorded and acknowledged.

Checked: every drop recorded once, every acknowledgement in the group once (/sim/sent), feedback neither
pending nor `unknown`, no device ever had two connections (the simulator's stream_replaced).
"""
from __future__ import annotations

import argparse
import random
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from scripts.benchmarks.cluster_run import Poster, kill_tree, signal_tree, tree, two_hosts
from scripts.benchmarks.system_run import PHONE, RunningSystem, group_jid, http, wait_for
from tests.pg import PgCluster, find_bin_dir

BLOWS = ("kill", "pause", "restart", "postgres")


def strike(blow: str, hosts: list[RunningSystem], pg: PgCluster, rng: random.Random, lease_s: float) -> str:
    """One blow; returns what was done, for the log."""
    if blow == "postgres":
        mode = rng.choice(("fast", "immediate"))
        pg.restart(mode)
        return f"PostgreSQL restarted ({mode})"
    host = rng.choice(hosts)
    name = "A" if host is hosts[0] else "B"
    if blow == "kill":
        kill_tree(host)
        host.start()
        return f"host {name} killed and started"
    if blow == "pause":
        processes, pause = tree(host), rng.uniform(lease_s, 3 * lease_s)
        signal_tree(processes, signal.SIGSTOP)
        time.sleep(pause)  # the blow's length: a frozen VM
        signal_tree(processes, signal.SIGCONT)
        return f"host {name} paused {pause:.1f} s"
    host.stop(sim=False)  # the simulator (WhatsApp) stays
    host.start()
    return f"host {name} restarted"


def check(a: RunningSystem, posted: list[str]) -> dict[str, int]:
    recorded = Counter(d for (d,) in a.query("drops", "SELECT d.drop_number FROM drop_events e "
                                                       "JOIN drops d ON d.id = e.drop_id"))
    acks = Counter(s["text"].split()[1] for s in a.sent() if s["recipient"] == group_jid(1))
    devices = http("GET", f"{a.sim_url}/sim/sessions")[PHONE]["devices"]  # type: ignore[index]
    return {"posted": len(posted), "missed": sum(1 for d in posted if d not in recorded),
            "recorded twice": sum(1 for n in recorded.values() if n > 1),
            "acks missing": sum(1 for d in posted if d not in acks),
            "acks twice": sum(1 for n in acks.values() if n > 1),
            "feedback unknown": a.query("drops", "SELECT COUNT(*) FROM feedback WHERE status = 'unknown'")[0][0],
            "two connections of a device": sum(d["stream_replaced"] for d in devices)}


def settled(a: RunningSystem, posted: list[str]) -> bool:
    acks = {s["text"].split()[1] for s in a.sent() if s["recipient"] == group_jid(1)}
    return (a.query("drops", "SELECT COUNT(*) FROM drops") == [(len(posted),)] and acks >= set(posted)
            and a.query("drops", "SELECT COUNT(*) FROM feedback WHERE status = 'pending'") == [(0,)])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/chaos --cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0, help="how long to cause chaos (default 2)")
    parser.add_argument("--kill-every", type=float, default=15.0, help="mean seconds between blows (default 15)")
    parser.add_argument("--rate", type=float, default=5.0, help="drops posted per second (default 5)")
    parser.add_argument("--lease-s", type=float, default=2.0, help="[cluster] lease_s (default 2)")
    parser.add_argument("--seed", type=int, default=int(time.time()), help="random seed (default: the time)")
    args = parser.parse_args(argv)
    bin_dir, why = find_bin_dir()
    if bin_dir is None:
        raise SystemExit(f"chaos --cluster: {why}")
    rng, pg = random.Random(args.seed), PgCluster(bin_dir, durable=True)
    workdir = Path(tempfile.mkdtemp(prefix="wa-chaos-cluster-"))
    print(f"chaos --cluster: {args.minutes:g} min, a blow every ~{args.kill_every:g} s ({', '.join(BLOWS)}), "
          f"{args.rate:g} drops/s, lease_s {args.lease_s:g}, seed {args.seed}, in {workdir}", flush=True)
    try:
        pg.start()
        url = pg.create_database("chaos_cluster")
        a, b = two_hosts(workdir, url, args.lease_s)
        poster = Poster(a, args.rate)
        posting = threading.Thread(target=poster.post, args=(int(args.minutes * 60 * args.rate),))
        try:
            posting.start()
            while posting.is_alive():
                time.sleep(rng.uniform(0.5, 1.5) * args.kill_every)  # the time between blows
                if posting.is_alive():
                    print(f"  {strike(rng.choice(BLOWS), [a, b], pg, rng, args.lease_s)}", flush=True)
            posting.join()
            try:
                wait_for(lambda: settled(a, poster.posted), 120, "every drop recorded and acknowledged", 0.2)
            except TimeoutError as exc:
                print(f"  {exc}")
            result = check(a, poster.posted)
        finally:
            posting.join()
            b.stop()
            a.stop()
    finally:
        pg.destroy()
    print("\n| " + " | ".join(result) + " |\n|" + "---|" * len(result) + "\n| "
          + " | ".join(str(n) for n in result.values()) + " |")
    ok = all(n == 0 for key, n in result.items() if key != "posted")
    if ok:
        shutil.rmtree(workdir, ignore_errors=True)
    print("\nOK: every drop once, every ack once" if ok else f"\nFAILED; data kept in {workdir}")
    return 0 if ok else 1
