"""`scripts/chaos --minutes N --kill-every S [--faults K,...] [--postgres]`: lose nothing while things die.

(`scripts/chaos --cluster ...`: two hosts and the cluster's faults instead: chaos_cluster.py.)

A whole system runs under `wa-watchdog run` (simulator, bridge, one monitor
per project, drops-api delivering drop.recorded/drop.backfilled webhooks to a
real receiver on 127.0.0.1 that verifies their Standard Webhooks signatures),
its drops store in drops.db or (`--postgres`) in a throwaway PostgreSQL
server that is crashed (`pg_ctl -m immediate`) and started again half way
through. A steady stream of drops is posted through the simulator, one
unique drop number per post, round robin over the projects' groups and the
contractors. Meanwhile, every S seconds on average, one blow of the fault
kinds chosen (`--faults`, default all): `bridge` SIGKILLs the bridge,
`monitor` a random monitor or drops-api (pids from the watchdog's control
API), `disconnect` has WhatsApp drop the connection (`POST /sim/disconnect`),
`pause` SIGSTOPs the watchdog for 2-12 s (a frozen supervisor must stall
nothing it supervises, and judge no child by a time it did not watch),
`clock`: the whole tree runs under libfaketime
(scripts/benchmarks/fake_clock.py) and the blow steps its wall clock an hour
back, the next one forward to the true time again (the watchdog must record
each step once). The simulator is on the faked clock too, so its
message times step with the rest (WhatsApp's would not); the webhook receiver
accepts the sender's clock either way.
`restore` follows docs/OPERATIONS.md's "A corrupt store" (at most one per
RESTORE_EVERY s; scripts/benchmarks/chaos_restore.py): back up, let the
cursors move on and a bridge kill's window be reported, stop the system,
post drops while it is stopped, restore `messages.db` from the backup, start
it again. For `restore` the simulator runs as a process of its own (`[sim]
enabled = false`), so that WhatsApp queues the drops posted while the system
is stopped. After a blow to the session one more drop is posted as soon as
its disconnect window is on record. Then posting stops and the run waits,
with a deadline, for quiescence: every component healthy, every window
closed, backfilled and reported (in the recovery log by every project's
monitor, naming the window by id and span), no feedback pending, every drop
event received.

Checked: every posted drop is in the drops store exactly once with the right group
and submitter (missed, duplicated: more than one submission event, i.e. the
same post recorded twice), every acknowledgement was sent exactly once
(/sim/sent), every drop posted inside a disconnect window is marked
backfilled (but one posted before a restore's stop in the window the
restored store opened: recorded live, whatever that window says now),
every drop has exactly one drop.recorded/drop.backfilled
event in the webhook outbox, and the receiver got each of those events (by
webhook-id; a redelivery after a kill is at-least-once, counted and deduped as
a receiver does) and none for a drop that was never recorded. The longest
outage is the longest time any component was not healthy in the watchdog's
view (polled every 50 ms; a restore's deliberate stop and start is not an outage).

The watchdog's crash-loop backoff is relaxed (crash_loop_exits, backoff_max)
because the kills are deliberate; the backoff policy has its own tests.

This module runs it (the system's config, the run's loop, the command line);
its parts: chaos_traffic.py (the posts and the outage watch), chaos_blows.py
(the blows), chaos_restore.py (the restore blow), chaos_checks.py (quiescence
and the checks), chaos_report.py (the report and its table).
"""
from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
import typing
from collections.abc import Callable
from pathlib import Path

from scripts.benchmarks.chaos_blows import CLOCK_STEP, FAULTS, RESTORE_EVERY, strike
from scripts.benchmarks.chaos_checks import DROP_EVENTS, check, quiescent
from scripts.benchmarks.chaos_report import Report
from scripts.benchmarks.chaos_traffic import Injector, OutageClock
from scripts.benchmarks.fake_clock import FakeClock
from scripts.benchmarks.system_run import RunningSystem, config_text, wait_for
from scripts.benchmarks.webhook_receiver import WebhookReceiver

if typing.TYPE_CHECKING:
    from tests.pg import PgCluster

CHAOS_WATCHDOG = "crash_loop_exits = 1000\nbackoff_max = 1.0\n"
PG_OUTAGE = 2.0  # seconds the PostgreSQL server stays down in the middle of a --postgres run


def chaos_config(projects: int, receiver: WebhookReceiver, database_url: str = "", separate_sim: bool = False) -> str:
    """The system under chaos: `projects` monitors, and drops-api delivering the drop events to `receiver`;
    `separate_sim` (needed by `restore`): the simulator is not the watchdog's (`RunningSystem(separate_sim=True)`)."""
    return (config_text(projects, CHAOS_WATCHDOG, database_url, separate_sim=separate_sim)
            + receiver.config("chaos", DROP_EVENTS))


def run_chaos(system: RunningSystem, receiver: WebhookReceiver, seconds: float, kill_every: float, rate: float,
              projects: int, seed: int, quiesce_timeout: float = 90.0, postgres: PgCluster | None = None,
              faults: tuple[str, ...] = FAULTS, fake_clock: FakeClock | None = None,
              enough: Callable[[Report], bool] | None = None) -> Report:
    """Chaos on a started system (its config from `chaos_config` with this `receiver`; with `restore` in
    `faults`, separate_sim) for `seconds`, blows of the kinds in `faults` (`restore` at most one per
    RESTORE_EVERY s); then wait for quiescence (`quiesce_timeout`: else `report.quiescent` is False) and check.

    `postgres`: the server holding the drops store, crashed and restarted half way through. `fake_clock`: the
    system's wall clock (`RunningSystem(env=fake_clock.env())`), stepped as one more kind of blow. `enough`: the
    blows go on past `seconds` (at most as long again) until it holds: on a loaded machine a blow takes longer
    (a restore most), and a run meant to include so many kills must not end with fewer.
    """
    rng = random.Random(seed)
    faults = faults if fake_clock is not None else tuple(f for f in faults if f != "clock")
    report = Report(seconds=seconds)
    outages, injector = OutageClock(system), Injector(system, projects, rate)
    outages.start()
    injector.start()
    deadline = time.monotonic() + seconds
    last_call = deadline + seconds  # the latest end when `enough` still does not hold
    restore_from = time.monotonic()  # the first restore may come at once
    pg_crash_at = time.monotonic() + seconds / 2 if postgres is not None else None

    def end() -> float:
        return deadline if enough is None or enough(report) else last_call

    while (now := time.monotonic()) < end():
        time.sleep(min(rng.uniform(0.5, 1.5) * kill_every, max(end() - now, 0)))
        if pg_crash_at is not None and time.monotonic() >= pg_crash_at:
            assert postgres is not None
            postgres.stop("immediate")  # a crash: monitors see broken connections mid-transaction
            time.sleep(PG_OUTAGE)  # drops keep coming while it is down
            postgres.start()
            report.pg_restarts += 1
            pg_crash_at = None
        elif time.monotonic() < end():
            kinds = faults if time.monotonic() >= restore_from else tuple(f for f in faults if f != "restore")
            if kinds:
                restores = report.restores
                strike(system, rng, projects, report, injector, kinds, outages, fake_clock)
                if report.restores > restores:
                    restore_from = time.monotonic() + RESTORE_EVERY
    injector.halt.set()
    injector.join()
    settle = time.monotonic()
    try:
        wait_for(lambda: quiescent(system, injector.posts, projects, receiver), quiesce_timeout,
                 "quiescence", interval=0.2)
    except TimeoutError:
        report.quiescent = False
    finally:
        report.quiesced_in_s = time.monotonic() - settle
        outages.halt.set()
        outages.join()
        report.longest_outage_s, report.longest_outage_of = outages.longest
        check(system, injector.posts, projects, report, receiver)
    return report


def main(argv: list[str]) -> int:
    if "--cluster" in argv:  # two hosts and their faults: a run of its own (chaos_cluster.py)
        from scripts.benchmarks.chaos_cluster import main as cluster
        return cluster([arg for arg in argv if arg != "--cluster"])
    parser = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=1.0, help="how long to cause chaos (default 1)")
    parser.add_argument("--kill-every", type=float, default=5.0, help="mean seconds between blows (default 5)")
    parser.add_argument("--rate", type=float, default=5.0, help="drops posted per second (default 5)")
    parser.add_argument("--projects", type=int, default=3, help="projects (monitors), one group each (default 3)")
    parser.add_argument("--seed", type=int, default=int(time.time()), help="random seed (default: the time)")
    parser.add_argument("--keep", action="store_true", help="keep the data directory for inspection")
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"blows to mix (default {','.join(FAULTS)})")
    parser.add_argument("--postgres", action="store_true",
                        help="drops store in a throwaway PostgreSQL server, crashed and restarted half way")
    args = parser.parse_args(argv)
    faults = tuple(args.faults.split(","))
    if unknown := set(faults) - set(FAULTS):
        parser.error(f"--faults: unknown {', '.join(sorted(unknown))} (known: {', '.join(FAULTS)})")
    workdir = Path(tempfile.mkdtemp(prefix="wa-chaos-"))
    try:
        fake_clock = FakeClock(workdir) if "clock" in faults else None
    except FileNotFoundError as exc:
        raise SystemExit(f"chaos: the clock blow needs libfaketime ({exc}); install faketime, or leave clock out "
                         f"of --faults") from None
    postgres = _start_postgres() if args.postgres else None
    url = postgres.create_database("chaos") if postgres else ""
    receiver = WebhookReceiver(skews=(-CLOCK_STEP,) if fake_clock else ())
    receiver.start()
    separate_sim = "restore" in faults
    system = RunningSystem(workdir, chaos_config(args.projects, receiver, url, separate_sim), url,
                           env=fake_clock.env() if fake_clock else None, separate_sim=separate_sim)
    print(f"chaos: {args.minutes:g} min, a blow every ~{args.kill_every:g} s ({', '.join(faults)}), "
          f"{args.rate:g} drops/s, {args.projects} projects, seed {args.seed}, "
          f"drops store {'PostgreSQL' if url else 'drops.db'}, in {workdir}", flush=True)
    try:
        system.start()
        report = run_chaos(system, receiver, args.minutes * 60, args.kill_every, args.rate, args.projects,
                           args.seed, postgres=postgres, faults=faults, fake_clock=fake_clock)
    except TimeoutError as exc:  # the system did not come up (at the start or after a restore)
        print(f"chaos: {exc}; see {workdir}", file=sys.stderr)
        return 1
    finally:
        system.stop()
        receiver.close()
        if postgres is not None:
            postgres.destroy()
    print(report.table())
    if not args.keep and report.ok:
        shutil.rmtree(workdir, ignore_errors=True)
    print("\nOK: nothing lost, nothing twice" if report.ok else f"\nFAILED; data kept in {workdir}")
    return 0 if report.ok else 1


def _start_postgres() -> PgCluster:
    from tests.pg import PgCluster, find_bin_dir
    bin_dir, why = find_bin_dir()
    if bin_dir is None:
        raise SystemExit(f"chaos --postgres: {why}")
    cluster = PgCluster(bin_dir, durable=True)
    cluster.start()
    return cluster


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
