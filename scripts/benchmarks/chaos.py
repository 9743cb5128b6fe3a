"""`scripts/chaos --minutes N --kill-every S [--faults K,...] [--postgres]`: lose nothing while things die.

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
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import typing
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from scripts.benchmarks.chaos_restore import restore_blow
from scripts.benchmarks.fake_clock import FakeClock
from scripts.benchmarks.system_run import CONTRACTORS, RunningSystem, config_text, group_jid, wait_for
from scripts.benchmarks.webhook_receiver import WebhookReceiver
from bridge.schema import WINDOW_SELECT, Window
from watchdog.shared.recovery_log import RecoveryLog

if typing.TYPE_CHECKING:
    from tests.pg import PgCluster

CHAOS_WATCHDOG = "crash_loop_exits = 1000\nbackoff_max = 1.0\n"
STATUS_POLL = 0.05
PG_OUTAGE = 2.0  # seconds the PostgreSQL server stays down in the middle of a --postgres run
DROP_EVENTS = ("drop.recorded", "drop.backfilled")
WINDOW_WAIT = 5.0  # seconds a blow to the session may take to be on record as a disconnect window (a cold start)
API = "drops-api"
FAULTS = ("bridge", "monitor", "disconnect", "pause", "clock", "restore")
PAUSE_S = (2.0, 12.0)  # how long a `pause` blow keeps the watchdog stopped
CLOCK_STEP = 3600  # seconds a `clock` blow steps the wall clock back; the next one forward again
RESTORE_EVERY = 60.0  # seconds at least between two `restore` blows (each a stop and a cold start of everything)


@dataclass(frozen=True)
class Post:
    drop: str
    project: str
    group: str
    contractor: str
    at: datetime


@dataclass
class Report:
    posted: int = 0
    recorded: int = 0
    missed: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    misattributed: list[str] = field(default_factory=list)
    ack_missing: list[str] = field(default_factory=list)
    ack_duplicates: list[str] = field(default_factory=list)
    outage_posts: int = 0
    not_backfilled: list[str] = field(default_factory=list)
    events_missing: list[str] = field(default_factory=list)  # no drop.recorded/backfilled event in the outbox
    events_duplicated: list[str] = field(default_factory=list)
    webhook_lost: list[str] = field(default_factory=list)  # drops whose outbox event the receiver never got
    webhook_unknown: list[str] = field(default_factory=list)  # received events of no recorded drop
    webhook_bad_signatures: int = 0
    webhook_redelivered: int = 0  # deliveries of an id already received (after a kill): deduped by the receiver
    pg_restarts: int = 0
    kills: Counter = field(default_factory=Counter)
    disconnects: int = 0
    pauses: int = 0
    paused_s: float = 0.0
    hangs: int = 0  # children the watchdog judged hung: no blow hangs one, so a pause must not make it think so
    clock_steps: int = 0
    clock_steps_recorded: int = 0  # clock_step records the watchdog wrote
    restores: int = 0
    unclean_stops: int = 0  # a restore's SIGTERM to the watchdog that did not end in exit code 0
    restore_stops: list[datetime] = field(default_factory=list)  # when each restore stopped the system
    posted_while_stopped: list[str] = field(default_factory=list)
    unreported_windows: list[str] = field(default_factory=list)  # closed windows some monitor never reported
    quiescent: bool = True  # False: the run timed out waiting for quiescence (the table still says what is wrong)
    windows: int = 0
    longest_outage_s: float = 0.0
    longest_outage_of: str = ""
    seconds: float = 0.0
    quiesced_in_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.quiescent and not (
            self.hangs or self.unclean_stops or self.missed or self.duplicated or self.misattributed
            or self.ack_missing or self.ack_duplicates or self.not_backfilled or self.unreported_windows
            or self.events_missing or self.events_duplicated or self.webhook_lost or self.webhook_unknown
            or self.webhook_bad_signatures or self.clock_steps_recorded != self.clock_steps)

    def table(self) -> str:
        kills = ", ".join(f"{n} {name}" for name, n in sorted(self.kills.items())) or "none"
        settled = "quiescent" if self.quiescent else "NOT quiescent (gave up)"
        stopped_missed = sorted(set(self.posted_while_stopped) & set(self.missed))
        rows = [
            ("duration", f"{self.seconds:.0f} s of chaos, {settled} {self.quiesced_in_s:.1f} s later"),
            ("drops posted", self.posted),
            ("drops recorded", self.recorded),
            ("missed", _listed(self.missed)),
            ("duplicated", _listed(self.duplicated)),
            ("wrong group or submitter", _listed(self.misattributed)),
            ("acknowledgements missing", _listed(self.ack_missing)),
            ("feedback duplicates", _listed(self.ack_duplicates)),
            ("posted during an outage", f"{self.outage_posts} (not marked backfilled: "
                                        f"{_listed(self.not_backfilled)})"),
            ("drop events missing / twice in the outbox", f"{_listed(self.events_missing)} / "
                                                          f"{_listed(self.events_duplicated)}"),
            ("drop events lost on the way to the receiver", _listed(self.webhook_lost)),
            ("received for no recorded drop / bad signatures", f"{_listed(self.webhook_unknown)} / "
                                                               f"{self.webhook_bad_signatures}"),
            ("redelivered (same webhook-id, deduped)", self.webhook_redelivered),
            ("PostgreSQL crashes (restarted)", self.pg_restarts),
            ("kills (SIGKILL)", f"{sum(self.kills.values())}: {kills}"),
            ("server disconnects", self.disconnects),
            ("watchdog paused (SIGSTOP)", f"{self.pauses} times, {self.paused_s:.0f} s in all"),
            ("children judged hung (target 0)", self.hangs),
            ("wall clock steps of an hour (recorded)", f"{self.clock_steps} ({self.clock_steps_recorded})"),
            ("restores of messages.db (backup, bridge kill, stop, restore, start)",
             f"{self.restores} ({self.unclean_stops} unclean stops)"),
            ("posted while stopped (until healthy) for a restore (missed)",
             f"{len(self.posted_while_stopped)} ({_listed(stopped_missed)})"),
            ("disconnect windows (not reported by every monitor)",
             f"{self.windows} ({_listed(self.unreported_windows)})"),
            ("longest outage", f"{self.longest_outage_s:.2f} s ({self.longest_outage_of or '-'})"),
        ]
        return "| | |\n|---|---|\n" + "\n".join(f"| {name} | {value} |" for name, value in rows)


def _listed(items: list[str]) -> str:
    return str(len(items)) + (f" ({', '.join(items[:10])}{' ...' if len(items) > 10 else ''})" if items else "")


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class OutageClock(threading.Thread):
    """Polls the watchdog's status; remembers the longest time any component was not healthy."""

    def __init__(self, system: RunningSystem) -> None:
        super().__init__(daemon=True)
        self.system = system
        self.since: dict[str, float] = {}
        self.longest = (0.0, "")
        self.halt = threading.Event()
        self.suspended = threading.Event()  # set while the system is stopped and started on purpose

    @contextlib.contextmanager
    def suspend(self) -> typing.Iterator[None]:
        """Not an outage: the system is stopped and started on purpose (a restore)."""
        self.suspended.set()
        try:
            yield
        finally:
            self.since.clear()
            self.suspended.clear()

    def run(self) -> None:
        while not self.halt.wait(STATUS_POLL):
            if self.suspended.is_set():
                continue
            now = time.monotonic()
            for component in self.system.status():
                name = component["name"]
                if not component["healthy"]:
                    self.since.setdefault(name, now)
                elif name in self.since:
                    self.longest = max(self.longest, (now - self.since.pop(name), name))


class Injector(threading.Thread):
    """Posts one new drop number every 1/rate seconds, round robin over groups and contractors."""

    def __init__(self, system: RunningSystem, projects: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.system = system
        self.projects = projects
        self.interval = 1 / rate
        self.posts: list[Post] = []
        self.halt = threading.Event()
        self._lock = threading.Lock()  # the strike posts too, from the main thread

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            self.post()

    def post(self) -> None:
        """Post the next drop now (also right after a blow, so that drops land in every outage)."""
        with self._lock:
            n = len(self.posts)
            project = n % self.projects + 1
            contractor = CONTRACTORS[n % len(CONTRACTORS)]
            drop = f"DR{7000000 + n}"
            try:
                answer = self.system.inject(group_jid(project), contractor, f"{drop} installed, pole {n}")
            except (OSError, RuntimeError, ValueError):
                return  # WhatsApp (the simulator) is being restarted: not posted, the next tick posts this drop
            self.posts.append(Post(drop, f"p{project}", group_jid(project), contractor, _time(answer["timestamp"])))


def chaos_config(projects: int, receiver: WebhookReceiver, database_url: str = "", separate_sim: bool = False) -> str:
    """The system under chaos: `projects` monitors, and drops-api delivering the drop events to `receiver`;
    `separate_sim` (needed by `restore`): the simulator is not the watchdog's (`RunningSystem(separate_sim=True)`)."""
    return (config_text(projects, CHAOS_WATCHDOG, database_url, separate_sim=separate_sim)
            + receiver.config("chaos", DROP_EVENTS))


def strike(system: RunningSystem, rng: random.Random, projects: int, report: Report, injector: Injector,
           faults: tuple[str, ...], outages: OutageClock, clock: FakeClock | None = None) -> None:
    """One random blow of the kinds in `faults` (see the module's docstring); `clock` is the system's faked
    wall clock, stepped an hour back by a `clock` blow, or forward to the true time again.

    After a blow to the session a drop is posted inside the outage (with the warm standby a bridge outage
    lasts tens of milliseconds: the steady stream would mostly miss it).
    """
    action = rng.choice(faults)
    windows = _windows(system)
    if action == "clock":
        assert clock is not None
        clock.set(-CLOCK_STEP if clock.offset == 0 else 0)
        report.clock_steps += 1
        return
    if action == "restore":
        with outages.suspend():
            restored = restore_blow(system, injector, projects, clock.offset if clock else 0)
        report.restores += 1
        report.unclean_stops += restored.stop_code != 0
        report.restore_stops.append(restored.stopped_at)
        report.posted_while_stopped += restored.while_stopped
        return
    if action == "pause":
        report.paused_s += pause_watchdog(system, rng.uniform(*PAUSE_S))
        report.pauses += 1
        return
    if action == "disconnect":
        if system.disconnect():
            report.disconnects += 1
            _post_in_window(system, injector, windows)
        return
    if action == "bridge":
        component = "bridge:main"
    else:  # one time in projects + 1 the blow falls on drops-api, the drops domain's other process
        n = rng.randint(1, projects + 1)
        component = API if n > projects else f"monitor:p{n}"
    pid = system.pid(component)
    if pid is None:
        return  # being restarted right now
    try:
        os.kill(pid, signal.SIGKILL)
        report.kills[component] += 1
    except ProcessLookupError:
        return
    if action == "bridge":
        _post_in_window(system, injector, windows)


def pause_watchdog(system: RunningSystem, seconds: float) -> float:
    """SIGSTOP the watchdog (only it: its children run on) for `seconds` while drops keep coming; SIGCONT."""
    assert system.proc is not None
    os.kill(system.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)  # the fault itself lasts this long; what it must not break is checked at the end
    finally:
        os.kill(system.proc.pid, signal.SIGCONT)
    return seconds


def _windows(system: RunningSystem) -> int:
    rows = system.query("messages", "SELECT COUNT(*) FROM disconnect_windows")
    return rows[0][0] if rows else 0


def _post_in_window(system: RunningSystem, injector: Injector, before: int) -> None:
    """Post as soon as the blow's window is on record: its truthful start trails the blow by a few ms (the bridge
    hears the close; the standby learns of the crash), so a drop posted at once often fell just before it."""
    with contextlib.suppress(TimeoutError):  # the window already closed, or never opened: post all the same
        wait_for(lambda: _windows(system) > before, WINDOW_WAIT, "the blow's disconnect window", interval=0.002)
    injector.post()


def drop_events(system: RunningSystem) -> dict[str, str]:
    """The outbox's drop.recorded/drop.backfilled events: webhook-id -> drop number."""
    return {event_id: json.loads(payload)["data"]["drop"]["drop_number"] for event_id, payload in system.query(
        "drops", f"SELECT id, payload FROM events WHERE type IN ({', '.join('?' * len(DROP_EVENTS))})", *DROP_EVENTS)}


def unreported_windows(system: RunningSystem, projects: int) -> list[Window]:
    """The store's windows, closed and backfilled, that some project's monitor has not reported in the recovery
    log. A report names its window by id and span (as the window's own times show it): after a restore the
    store numbers its windows again, and a report of an earlier window with the same id is not this one's."""
    reported = {(r["component"], r.get("window_id"), r["message"].split(" ")[1])
                for r in RecoveryLog(system.data_dir / "recoveries.jsonl").read()
                if r["event"] == "backfill" and r["component"].startswith("monitor:")}
    windows = [Window(*row) for row in system.query("messages", WINDOW_SELECT)]
    return [w for w in windows if w.ended_at and w.backfill_status != "pending"
            and any((f"monitor:p{n}", w.id, w.span) not in reported for n in range(1, projects + 1))]


def quiescent(system: RunningSystem, posts: list[Post], projects: int, receiver: WebhookReceiver) -> bool:
    """Everything posted is recorded and acknowledged, every outage is closed, backfilled and reported,
    and the receiver has every drop event of the outbox."""
    if not system.all_healthy():
        return False
    if system.query("drops", "SELECT COUNT(*) FROM drops") != [(len(posts),)]:
        return False
    if system.query("drops", "SELECT COUNT(*) FROM feedback WHERE status = 'pending'") != [(0,)]:
        return False
    acked = {s["text"].split()[1] for s in system.sent() if len(s["text"].split()) > 1}
    if not {p.drop for p in posts} <= acked:
        return False
    windows = system.query("messages", "SELECT id, ended_at IS NOT NULL AND backfill_status != 'pending' "
                                       "FROM disconnect_windows")
    if not all(done for _, done in windows):
        return False
    # Each window of the store, reported to every project (after a restore the drops store also remembers
    # windows of the file replaced: those are not the store's any more)
    reported = set(system.query("drops", "SELECT project, window_id FROM reported_windows "
                                         "WHERE reported_at IS NOT NULL AND account = 'main'"))
    if not {(f"p{n}", window) for window, _ in windows for n in range(1, projects + 1)} <= reported:
        return False
    if unreported_windows(system, projects):
        return False
    return drop_events(system).keys() <= receiver.accepted().keys()


def check(system: RunningSystem, posts: list[Post], projects: int, report: Report, receiver: WebhookReceiver) -> None:
    report.posted = len(posts)
    report.unreported_windows = [f"{w.id} {w.span}" for w in unreported_windows(system, projects)]
    recorded = Counter(r["event"] for r in RecoveryLog(system.data_dir / "recoveries.jsonl").read())
    report.hangs, report.clock_steps_recorded = recorded["hang"], recorded["clock_step"]
    events = drop_events(system)
    outbox = Counter(events.values())
    accepted = receiver.accepted()
    received = {drop for event_id, drop in events.items() if event_id in accepted}
    report.webhook_redelivered = sum(n - 1 for n in accepted.values())
    report.webhook_bad_signatures = receiver.bad_signatures
    rows = {(project, drop): (group, submitter, backfilled) for project, drop, group, submitter, backfilled in
            system.query("drops", "SELECT project, drop_number, group_jid, submitted_by, backfilled FROM drops")}
    submissions = Counter(system.query("drops", "SELECT d.project, d.drop_number FROM drop_events e "
                                                "JOIN drops d ON d.id = e.drop_id"))
    recorded = {drop for _, drop in rows}
    report.webhook_unknown = [event_id for event_id, body in receiver.events().items()
                              if event_id not in events or body["data"]["drop"]["drop_number"] not in recorded]
    acks = Counter(s["text"].split()[1] for s in system.sent() if len(s["text"].split()) > 1)
    windows = [(_time(start), _time(end)) for start, end in
               system.query("messages",
                            "SELECT started_at, ended_at FROM disconnect_windows WHERE ended_at IS NOT NULL")]
    report.windows = len(windows)
    for post in posts:
        row = rows.get((post.project, post.drop))
        if row is None:
            report.missed.append(post.drop)
            continue
        report.recorded += 1
        if submissions[(post.project, post.drop)] > 1:
            report.duplicated.append(post.drop)
        if row[:2] != (post.group, post.contractor):
            report.misattributed.append(post.drop)
        if acks[post.drop] == 0:
            report.ack_missing.append(post.drop)
        elif acks[post.drop] > 1:
            report.ack_duplicates.append(post.drop)
        if outbox[post.drop] == 0:
            report.events_missing.append(post.drop)
        elif outbox[post.drop] > 1:
            report.events_duplicated.append(post.drop)
        if post.drop not in received:
            report.webhook_lost.append(post.drop)
        if outages := [(start, end) for start, end in windows if start <= post.at <= end]:
            report.outage_posts += 1
            if not row[2] and not all(_rewritten(post, window, report.restore_stops) for window in outages):
                report.not_backfilled.append(post.drop)


def _rewritten(post: Post, window: tuple[datetime, datetime], stops: list[datetime]) -> bool:
    """Posted before a restore's stop, inside the window the restored store opened for it (from its last
    heartbeat to the restart): recorded live then, whatever that window says now."""
    start, end = window
    return any(start <= stop <= end and post.at <= stop for stop in stops)


def run_chaos(system: RunningSystem, receiver: WebhookReceiver, seconds: float, kill_every: float, rate: float,
              projects: int, seed: int, quiesce_timeout: float = 90.0, postgres: PgCluster | None = None,
              faults: tuple[str, ...] = FAULTS, fake_clock: FakeClock | None = None) -> Report:
    """Chaos on a started system (its config from `chaos_config` with this `receiver`; with `restore` in
    `faults`, separate_sim) for `seconds`, blows of the kinds in `faults` (`restore` at most one per
    RESTORE_EVERY s); then wait for quiescence (`quiesce_timeout`: else `report.quiescent` is False) and check.

    `postgres`: the server holding the drops store, crashed and restarted half way through. `fake_clock`: the
    system's wall clock (`RunningSystem(env=fake_clock.env())`), stepped as one more kind of blow.
    """
    rng = random.Random(seed)
    faults = faults if fake_clock is not None else tuple(f for f in faults if f != "clock")
    report = Report(seconds=seconds)
    outages, injector = OutageClock(system), Injector(system, projects, rate)
    outages.start()
    injector.start()
    deadline = time.monotonic() + seconds
    restore_from = time.monotonic()  # the first restore may come at once
    pg_crash_at = time.monotonic() + seconds / 2 if postgres is not None else None
    while (now := time.monotonic()) < deadline:
        time.sleep(min(rng.uniform(0.5, 1.5) * kill_every, max(deadline - now, 0)))
        if pg_crash_at is not None and time.monotonic() >= pg_crash_at:
            assert postgres is not None
            postgres.stop("immediate")  # a crash: monitors see broken connections mid-transaction
            time.sleep(PG_OUTAGE)  # drops keep coming while it is down
            postgres.start()
            report.pg_restarts += 1
            pg_crash_at = None
        elif time.monotonic() < deadline:
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
