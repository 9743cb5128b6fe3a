"""`scripts/chaos --cluster [--minutes N] [--kill-every S] [--faults K,...] [--seed K]`: the cluster's six faults
(issue 21), mixed at random.

Two hosts, each a `wa-watchdog run` tree in its own network namespace (scripts/benchmarks/cluster_lab.py, the lab
of tests/test_cluster_partitions.py: one simulator and one durable throwaway PostgreSQL reached by both), drops
posted at `--rate` throughout, and every S seconds on average one blow:
`kill` a host's whole tree (kill -9) and start it again; `pause` a host's tree (SIGSTOP) for lease_s to 3 lease_s,
then SIGCONT; `pg-cut` a host cut off from PostgreSQL only and `wa-cut` from WhatsApp (the simulator) only, its
packets dropped silently by iptables in its namespace for lease_s to `--cut-s`, then healed; `postgres` restarted
(fast or immediate shutdown); `rolling` a rolling upgrade (stop A, start A, stop B, start B). A host is struck
only while the other is up (a cluster of two survives one host's loss, not both). Without root (or ip,
iptables) the hosts are process trees in this namespace and the two cuts are left out, saying why. Then posting
stops and the run waits, with a deadline, for every drop to be recorded, acknowledged and its webhook received.

Checked and printed (scripts/benchmarks/chaos_cluster_checks.py): every drop recorded once; every acknowledgement
in the group once (/sim/sent), or `unknown`, counted; none sent under a token no longer current when WhatsApp got
it (the token its outbox row went under, against the lease's durable grant history); a bridge's re-sends of an id already
sent (the simulator keeps one; through WhatsApp a second message), attributed to the blow they followed; no
device ever connected twice; each drop event's webhook received at least once by a signature-checking receiver.
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
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from scripts.benchmarks.chaos_checks import DROP_EVENTS
from scripts.benchmarks.chaos_cluster_checks import FAILURES, History, Outcome, check, settled
from scripts.benchmarks.cluster_lab import Lab, LabUnavailable, cluster_lab
from scripts.benchmarks.cluster_run import Poster, kill_tree, server_ids, signal_tree, tree, two_hosts
from scripts.benchmarks.system_run import PHONE, RunningSystem, http, wait_for
from scripts.benchmarks.webhook_receiver import WebhookReceiver
from tests.pg import PgCluster, find_bin_dir
from watchdog.shared import clock

BLOWS = ("kill", "pause", "pg-cut", "wa-cut", "postgres", "rolling")
CUTS = ("pg-cut", "wa-cut")  # need the namespaces


@dataclass
class Cluster:
    a: RunningSystem
    b: RunningSystem
    pg: PgCluster
    pg_url: str
    lab: Lab | None  # None: process trees in this namespace, no partitions

    def name(self, host: RunningSystem) -> str:
        return "A" if host is self.a else "B"


@dataclass
class Blow:
    kind: str
    what: str
    at: float  # epoch seconds (the clock seam), when it began
    followed: Counter = field(default_factory=Counter)  # the simulator's counts per node, from its start to the next


def start(host: RunningSystem) -> None:
    """Start a host again; a start that times out (a loaded machine) is tried once more."""
    try:
        host.start()
    except TimeoutError as exc:
        print(f"    start failed, trying again: {str(exc).splitlines()[0]}", flush=True)
        host.start()


def strike(kind: str, cluster: Cluster, rng: random.Random, lease_s: float, cut_s: float) -> str:
    """One blow, over when it returns (the host restarted, resumed or healed); returns what was done."""
    if kind == "postgres":
        mode = rng.choice(("fast", "immediate"))
        cluster.pg.restart(mode)
        return f"PostgreSQL restarted ({mode})"
    if kind == "rolling":
        for host in (cluster.a, cluster.b):
            host.stop(sim=False)  # the simulator (WhatsApp) stays
            start(host)
        return "rolling upgrade: A stopped and started, then B"
    host = rng.choice((cluster.a, cluster.b))
    name = cluster.name(host)
    if kind == "kill":
        kill_tree(host)
        start(host)
        return f"host {name} killed (kill -9 of its tree) and started"
    if kind == "pause":
        processes, pause = tree(host), rng.uniform(lease_s, 3 * lease_s)
        signal_tree(processes, signal.SIGSTOP)  # the watchdog first, then its children
        time.sleep(pause)  # the blow's length: a frozen VM
        signal_tree(processes[::-1], signal.SIGCONT)  # the children first: a VM resumes whole, and a watchdog
        # resumed before them would find them stopped and restart them (an artifact of signalling one by one)
        return f"host {name} paused {pause:.1f} s"
    lab, length = cluster.lab, rng.uniform(lease_s, cut_s)
    assert lab is not None
    port, server = (lab.pg.port, "PostgreSQL") if kind == "pg-cut" else (lab.relay.port, "WhatsApp")
    lab.cut(host, port)  # type: ignore[arg-type]
    try:
        time.sleep(length)  # the blow's length: a partition
    finally:
        lab.cut(host, port, cut=False)  # type: ignore[arg-type]
    return f"host {name} cut off from {server} for {length:.1f} s"


def device_counts(cluster: Cluster) -> Counter:
    """The simulator's counts per device: sends of an id already sent, a connection replacing a live one (two
    connections) or a half-open one (what a cut left: not two)."""
    devices = http("GET", f"{cluster.a.sim_url}/sim/sessions")[PHONE]["devices"]  # type: ignore[index]
    return Counter({f"{label} {d['node']}": d[key] for d in devices
                    for key, label in (("resent", "re-sent by"), ("stream_replaced", "two connections of"),
                                       ("dead_replaced", "half-open connections replaced of"))})


def up(stack: ExitStack, workdir: Path, bin_dir: Path, lease_s: float, receiver: WebhookReceiver,
       edit: Callable[[str], str] = str) -> Cluster:
    """The two hosts in network namespaces, or (not permitted here) as process trees, saying why; `edit` changes
    both hosts' config."""
    try:
        lab = stack.enter_context(cluster_lab(workdir, bin_dir, lease_s, durable=True, webhooks=receiver, edit=edit))
        return Cluster(lab.a, lab.b, lab.pg, lab.pg_url, lab)
    except LabUnavailable as exc:
        print(f"  partitions skipped ({', '.join(CUTS)} left out): {exc}", flush=True)
    pg = PgCluster(bin_dir, durable=True)
    stack.callback(pg.destroy)
    pg.start()
    url = pg.create_database("chaos_cluster")
    a, b = two_hosts(workdir, url, lease_s, edit=edit, extra=receiver.config("chaos", DROP_EVENTS))
    stack.callback(a.stop)
    stack.callback(b.stop)
    return Cluster(a, b, pg, url, None)


def attribute(outcome: Outcome, blows: list[Blow], started: float) -> list[str]:
    """Each blow, with the sends under another node's token and the re-sends that followed it (before the next)."""
    lines = []
    for i, blow in enumerate(blows):
        until = blows[i + 1].at if i + 1 < len(blows) else float("inf")
        stale = [s for s in outcome.stale if blow.at <= s.at < until]
        extra = "".join(f"; {n} {what}" for what, n in sorted(blow.followed.items()) if n)
        extra += "".join(f"; {s}" for s in stale)
        lines.append(f"  {blow.at - started:6.1f} s  {blow.what}{extra}")
    return lines


def table(counts: dict[str, int], faults: Counter) -> str:
    rows = [f"| {key} | {n} |" for key, n in counts.items()]
    rows += [f"| faults applied: {kind} | {faults[kind]} |" for kind in BLOWS if kind in faults]
    return "\n".join(["| | count |", "|---|---|", *rows])


def draws(kinds: tuple[str, ...], rng: random.Random) -> Iterator[str]:
    """The blows in rounds, each round every kind once in a random order: a run of any length mixes them evenly."""
    while True:
        round_ = list(kinds)
        rng.shuffle(round_)
        yield from round_


@dataclass
class Run:
    outcome: Outcome
    blows: list[Blow]  # the first is the start (no blow)
    partitions: bool  # the hosts were in namespaces: the cuts could be made

    @property
    def faults(self) -> Counter:
        return Counter(blow.kind for blow in self.blows if blow.kind)


def run(args: argparse.Namespace, workdir: Path, bin_dir: Path) -> Run:
    """The hosts started, chaos for `args.minutes` (blows of `args.faults`), the wait until settled, the checks."""
    rng, kinds = random.Random(args.seed), tuple(args.faults.split(","))
    receiver = WebhookReceiver()
    receiver.start()
    with ExitStack() as stack:
        stack.callback(receiver.close)
        cluster = up(stack, workdir, bin_dir, args.lease_s, receiver, server_ids if args.server_ids else str)
        if cluster.lab is None:
            kinds = tuple(k for k in kinds if k not in CUTS)
        poster = Poster(cluster.a, args.rate)
        posting = threading.Thread(target=poster.post, args=(int(args.minutes * 60 * args.rate),))
        stack.callback(posting.join)
        stack.callback(poster.halt.set)  # (on a failure: the posts stop before they are waited for)
        last = device_counts(cluster)
        blows, kind_of = [Blow("", "the start (no blow yet)", clock.now_s())], draws(kinds, rng)
        posting.start()
        while posting.is_alive():
            time.sleep(rng.uniform(0.5, 1.5) * args.kill_every)  # the time between blows
            if posting.is_alive() and kinds:
                kind, at, now = next(kind_of), clock.now_s(), device_counts(cluster)
                blows[-1].followed, last = now - last, now
                blows.append(Blow(kind, strike(kind, cluster, rng, args.lease_s, args.cut_s), at))
                print(f"  {blows[-1].what}", flush=True)
        posting.join()
        try:
            wait_for(lambda: settled(cluster.a, poster.posted, receiver), 180,
                     "every drop recorded and acknowledged and its webhook received", 0.5)
        except TimeoutError as exc:
            print(f"  {exc}")
        blows[-1].followed = device_counts(cluster) - last
        hosts = {"vps-a": cluster.a, "vps-b": cluster.b}
        return Run(check(cluster.a, hosts, poster.posted, History.read(cluster.pg_url), receiver), blows,
                   cluster.lab is not None)


def arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/chaos --cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0, help="how long to cause chaos (default 2)")
    parser.add_argument("--kill-every", type=float, default=15.0, help="mean seconds between blows (default 15)")
    parser.add_argument("--rate", type=float, default=5.0, help="drops posted per second (default 5)")
    parser.add_argument("--lease-s", type=float, default=2.0, help="[cluster] lease_s (default 2)")
    parser.add_argument("--cut-s", type=float, default=30.0, help="longest partition, seconds (default 30)")
    parser.add_argument("--faults", default=",".join(BLOWS), help=f"blows to mix (default {','.join(BLOWS)})")
    parser.add_argument("--seed", type=int, default=int(clock.now_s()), help="random seed (default: the time)")
    parser.add_argument("--keep", action="store_true", help="keep the hosts' data directories")
    parser.add_argument("--server-ids", action="store_true",
                        help="the hosts send as neonize does ([sim] server_ids: a resend is a second message)")
    args = parser.parse_args(argv)
    if unknown := set(args.faults.split(",")) - set(BLOWS):
        parser.error(f"--faults: unknown {', '.join(sorted(unknown))} (known: {', '.join(BLOWS)})")
    return args


def main(argv: list[str]) -> int:
    args = arguments(argv)
    bin_dir, why = find_bin_dir()
    if bin_dir is None:
        raise SystemExit(f"chaos --cluster: {why}")
    workdir = Path(tempfile.mkdtemp(prefix="wa-chaos-cluster-"))
    print(f"chaos --cluster: {args.minutes:g} min, a blow every ~{args.kill_every:g} s ({args.faults}), "
          f"{args.rate:g} drops/s, lease_s {args.lease_s:g}, seed {args.seed}, in {workdir}", flush=True)
    result = run(args, workdir, bin_dir)
    outcome = result.outcome
    print("\nblows (seconds from the start), with what followed each:\n"
          + "\n".join(attribute(outcome, result.blows, result.blows[0].at)))
    print("\n" + table(outcome.counts, result.faults))
    if outcome.odd:
        print(f"\ndrops to look at ({len(outcome.odd)}): {', '.join(outcome.odd[:20])}")
    if outcome.ok and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    failed = [key for key in FAILURES if outcome.counts.get(key)]
    print("\nOK: every drop once, every ack once, sent under the current token, every webhook received"
          if outcome.ok else f"\nFAILED ({', '.join(failed)}); data kept in {workdir}")
    return 0 if outcome.ok else 1
