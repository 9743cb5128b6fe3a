"""The checks on one program's current child: heartbeat, process state, memory, start-up, HTTP and TCP probes.

Each check is a timer (or, for probes, a task) at that check's own period on
the watchdog's event loop; nothing polls faster than it has to. A check that
fails calls `unwell(event, cause)` (the watcher stops the child); probe
answers go to the child's health (watchdog/core/child_health.py), which knows what
an outage means, and readiness by running long enough too.

Load must not look like a hang. When a heartbeat is missed, /proc says why:
stopped (SIGSTOP) or asleep without using CPU is a hang; still starting (not
READY yet) and using CPU is a start-up, given until `start_timeout`; runnable
and gaining CPU time, but less than half a core, is a child starved by load:
given up to `overload_grace`, and recorded as `overloaded`. A busy loop that
gets a whole core and still does not heartbeat is a hang.

Nor may a pause of the watchdog itself: every judgement first asks the
watchdog's SelfWatch whether its own loop has just come back from a gap (paused
with SIGSTOP, a frozen VM); if so the deadlines are re-armed (`_rearm`) and
probe failures forgotten instead of holding that time against the child.
"""
from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from loguru import logger

from watchdog.core import probes
from watchdog.shared import check_kinds
from watchdog.core.child import ChildProcess
from watchdog.core.child_health import ChildHealth
from watchdog.shared.config_model import WatchdogConfig
from watchdog.core.hooks import Hooks
from watchdog.core.self_watch import SelfWatch
from watchdog.shared.programs import Check, Program
from watchdog.core.recovery import Records
from watchdog.core.timers import Tasks, Timers
from watchdog.shared.waiting import wait_event

STARVED_SHARE = 0.5  # of one core: below this a runnable child is starved, not spinning
RSS_PERIOD = 1.0  # seconds between memory checks (only when rss_limit_mb is set)
FAST_PERIOD = 0.1  # probe period while a program is coming up


class Verdict(enum.Enum):
    HANG = "hang"
    STARTING = "starting"
    OVERLOADED = "overloaded"


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    why: str


def judge(before: probes.ProcSample | None, now: probes.ProcSample | None, starting: bool,
          budget: float = float("inf")) -> Judgement:
    """Why a child that should have shown a sign of life did not: a pure function of two /proc samples.

    `before` is from its last sign of life; `budget` the CPU seconds it may use without one (a child that got a
    whole heartbeat interval of CPU and still said nothing is hung, however loaded the machine is)."""
    if now is None:
        return Judgement(Verdict.HANG, "the process is gone")
    if now.state == "T":
        return Judgement(Verdict.HANG, "process is stopped (SIGSTOP)")
    if before is None or now.at <= before.at:
        return Judgement(Verdict.HANG, f"process state {now.state}")
    gained = now.cpu_s - before.cpu_s
    share = gained / (now.at - before.at)
    if gained <= 0:
        return Judgement(Verdict.HANG, f"process state {now.state}, no CPU time used in {now.at - before.at:.1f} s")
    if starting:
        return Judgement(Verdict.STARTING, f"still starting ({share:.0%} of a core)")
    if gained >= budget:
        return Judgement(Verdict.HANG, f"used {gained:.1f} s of CPU since its last sign of life, busy at {share:.0%}"
                                       " of a core")
    if now.state in ("R", "D") and share < STARVED_SHARE:
        return Judgement(Verdict.OVERLOADED, f"runnable and starved of CPU ({share:.0%} of a core)")
    if now.state in ("R", "D"):
        return Judgement(Verdict.HANG, f"busy at {share:.0%} of a core without a sign of life")
    return Judgement(Verdict.HANG, f"process state {now.state} ({share:.0%} of a core)")


class Checks:
    """Arms every check for the program's current child; `cancel()` disarms them all."""

    def __init__(self, program: Program, hooks: Hooks, settings: WatchdogConfig, health: ChildHealth,
                 unwell: Callable[[str, str], None], records: Records, data_dir: Path,
                 http: aiohttp.ClientSession, gaps: SelfWatch) -> None:
        self.program = program
        self.name = program.name
        self.hooks = hooks
        self.settings = settings
        self.health = health
        self.unwell = unwell  # (event, cause): stop the child and recover
        self.records = records
        self.data_dir = data_dir
        self.http = http
        self.gaps = gaps
        self._unsubscribe = gaps.subscribe(self._rearm)
        self.child: ChildProcess | None = None  # armed for this one
        self.last_heartbeat = 0.0
        self._sample: probes.ProcSample | None = None  # /proc at the last heartbeat (or the start)
        self._grace_since: float | None = None  # a heartbeat was missed and the child given time since
        self._probe_failures: dict[tuple, int] = {}
        self._timers = Timers()
        self._tasks = Tasks(self.name)
        self._liveness_tasks: list[asyncio.Task] = []
        self._wakeup = asyncio.Event()

    # -- arming -----------------------------------------------------------------------

    def arm(self, child: ChildProcess) -> None:
        program, settings = self.program, self.settings
        self.child = child
        self._restart_deadlines(child)
        self._schedule("process", settings.process_check_period, self._check_process)
        self._schedule("start", settings.start_timeout, self._check_started)
        if program.rss_limit_mb:
            self._schedule("rss", RSS_PERIOD, self._check_rss)
        if program.ready.kind == check_kinds.STARTED:
            self._schedule("ready", program.ready.seconds, self.health.ready_by_check)
        liveness = {check.target: check for check in program.liveness}
        self._liveness_tasks = [self._tasks.run(self._probe_loop(child, check, liveness=True))
                                for check in liveness.values()]
        if probes.probe_for(program.ready.kind) and program.ready.target not in liveness:
            self._tasks.run(self._probe_loop(child, program.ready, liveness=False))

    def cancel(self) -> None:
        self.child = None
        self._timers.cancel_all()
        self._tasks.cancel_all()
        self._liveness_tasks = []

    def close(self) -> None:
        self.cancel()
        self._unsubscribe()

    def _schedule(self, name: str, delay: float, callback: Callable[[], None]) -> None:
        self._timers.schedule(name, delay, callback)

    def _restart_deadlines(self, child: ChildProcess) -> None:
        """Heartbeat, CPU sample and probe failures count from now (a new child, or after a loop gap)."""
        now = time.monotonic()
        self.last_heartbeat = now
        self._sample = probes.proc_sample(child.pid, now)
        self._grace_since = None
        self._probe_failures.clear()
        if self.program.watchdog_sec > 0:
            self._arm_heartbeat(self.program.watchdog_sec)

    def _rearm(self, gap: float) -> None:
        """The watchdog's loop did not run for `gap` seconds: the child's deadlines start again from now."""
        child = self.child
        if child is None or not child.running:
            return
        self._restart_deadlines(child)
        start = self._timers.remaining("start")
        if start is not None:  # what was left of start_timeout when the gap began
            self._schedule("start", max(start + gap, 0.0), self._check_started)

    # -- what the child says ------------------------------------------------------------

    def heartbeat(self) -> None:
        self.last_heartbeat = time.monotonic()
        if self.child is not None:
            self._sample = probes.proc_sample(self.child.pid, self.last_heartbeat)
        if self._grace_since is not None:
            logger.info("{} heartbeats again after {:.1f} s of grace", self.name, self.last_heartbeat - self._grace_since)
            self._grace_since = None

    def wake(self) -> None:
        """The child said READY=1 (or became ours with it said): probe now, not at the next period."""
        self._wakeup.set()

    def _overloaded(self, cause: str, log_only: bool = False) -> None:
        """A starved child was given time instead of being called hung: say so (once per episode)."""
        logger.warning("{} overloaded, not hung: {}", self.name, cause)
        if not log_only:
            self.records.add("overloaded", pid=self.child.pid if self.child else None, cause=cause)

    # -- timers -------------------------------------------------------------------------

    def _arm_heartbeat(self, after: float) -> None:
        self._schedule("heartbeat", max(after, 0.0), self._check_heartbeat)

    def _check_heartbeat(self) -> None:
        child, watchdog_sec = self.child, self.program.watchdog_sec
        if child is None or not child.running or self.gaps.resumed():
            return
        now = time.monotonic()
        silent = now - self.last_heartbeat
        if silent < watchdog_sec:
            self._arm_heartbeat(self.last_heartbeat + watchdog_sec - now)
            return
        sample = probes.proc_sample(child.pid, now)
        judgement = judge(self._sample, sample, starting=not self.health.started, budget=watchdog_sec)
        missed = f"missed heartbeat: no WATCHDOG=1 for {silent:.1f} s (watchdog_sec {watchdog_sec:g})"
        if judgement.verdict is Verdict.HANG:
            self.unwell("hang", f"{missed}: {judgement.why}")
            return
        if judgement.verdict is Verdict.OVERLOADED:
            grace = self.settings.overload_grace
            if self._grace_since is None:
                self._grace_since = now
                self._overloaded(f"{missed}; {judgement.why}: giving it up to {grace:g} s")
            elif now - self._grace_since > grace:
                self.unwell("hang", f"{missed}: {judgement.why} for more than overload_grace {grace:g} s")
                return
        elif self._grace_since is None:  # starting: start_timeout bounds it
            self._grace_since = now
            logger.info("{} {}: {}; not a hang yet", self.name, missed, judgement.why)
        self._arm_heartbeat(max(watchdog_sec / 2, 0.05))

    def _check_process(self) -> None:
        child = self.child
        if child is None or not child.running:
            return
        if probes.is_stopped(child.pid):
            self.unwell("hang", "process is stopped (SIGSTOP): it cannot answer or heartbeat")
            return
        self._schedule("process", self.settings.process_check_period, self._check_process)

    def _check_started(self) -> None:
        timeout = self.settings.start_timeout
        if self.gaps.resumed():
            return
        if not self.health.started:
            self.unwell("hang", f"not ready within start_timeout {timeout:g} s ({self.program.ready.describe()})")

    def _check_rss(self) -> None:
        child = self.child
        if child is None or not child.running:
            return
        rss = probes.rss_bytes(child.pid)
        limit = self.program.rss_limit_mb
        if rss is not None and rss > limit * 1024 * 1024:
            self.unwell("rss_limit", f"resident memory {rss / 1048576:.0f} MB above rss_limit_mb {limit}")
        else:
            self._schedule("rss", RSS_PERIOD, self._check_rss)

    # -- probes -------------------------------------------------------------------------

    async def _probe_loop(self, child: ChildProcess, check: Check, liveness: bool) -> None:
        """Probe every `period`; fast while the program is coming up, at once on READY=1.

        A frozen process (SIGSTOP) is a hang at the next probe, without waiting out failure_threshold timeouts.
        A readiness-only probe ends once the program is ready.
        """
        probe = probes.probe_for(check.kind)
        assert probe is not None  # config validation allows only probed kinds here
        target = probes.Target(self.name, child.pid, self.data_dir, self.http, self.hooks.classifier(check))
        sample = probes.proc_sample(child.pid, time.monotonic())
        while child.running and self.child is child:
            coming_up = not self.health.healthy and time.monotonic() - child.started_at < check.initial_delay
            period = min(check.period, FAST_PERIOD) if coming_up or not liveness else check.period
            await wait_event(self._wakeup, period)
            self._wakeup.clear()
            # Liveness counts once the program is up (start-up grace until ready) and initial_delay has passed.
            counts = liveness and self.health.started and time.monotonic() - child.started_at >= check.initial_delay
            if counts and probes.is_stopped(child.pid):
                self.unwell("hang", f"process is stopped (SIGSTOP): it cannot answer {check.describe()}")
                return
            gaps = self.gaps.count
            result = await probe(check, target)
            if not child.running or self.child is not child:
                return
            if self.gaps.resumed() or self.gaps.count != gaps:  # timed out while the watchdog did not run
                counts = counts and result.kind != probes.FAILURE
            now = probes.proc_sample(child.pid, time.monotonic())
            if counts and result.kind == probes.FAILURE and result.state == "timeout":
                judgement = judge(sample, now, starting=False, budget=check.period * check.failure_threshold)
                if judgement.verdict is Verdict.OVERLOADED:  # starved, not hung: this one does not count
                    self._overloaded(f"{check.describe()} timed out; {judgement.why}", log_only=True)
                    counts = False
            sample = now
            self._count(check, result, counts)
            if not liveness and self.health.ready:
                return

    def _count(self, check: Check, result: probes.HealthResult, counts: bool) -> None:
        key = check.target
        if result.kind != probes.FAILURE:
            self._probe_failures[key] = 0
        elif counts:
            failures = self._probe_failures.get(key, 0) + 1
            self._probe_failures[key] = failures
            if failures >= check.failure_threshold:
                detail = f" ({result.detail})" if result.detail else ""
                self.unwell("unhealthy", f"{check.describe()} failed {failures} times: {result.state}{detail}")
                return
        self.health.on_probe(check, result, counts)

    # -- for the supervision cycle --------------------------------------------------------

    def overdue(self) -> str | None:
        """A check that should have acted by now and has not: a sign the watchdog itself is wedged or broken."""
        watchdog_sec = self.program.watchdog_sec
        if self.gaps.resumed():
            return None
        silent = time.monotonic() - self.last_heartbeat
        remaining = self._timers.remaining("heartbeat")
        late = remaining is None or remaining < -1.0
        if watchdog_sec > 0 and silent > 2 * watchdog_sec + 1 and late:
            return f"{self.name}: heartbeat check overdue ({silent:.1f} s of silence unhandled)"
        if self._liveness_tasks and all(task.done() for task in self._liveness_tasks):
            return f"{self.name}: health probe stopped"
        return None
