"""The chaos run's blows (scripts/benchmarks/chaos.py says what each does): one at random of the kinds chosen."""
from __future__ import annotations

import contextlib
import os
import random
import signal
import time

from scripts.benchmarks.chaos_report import Report
from scripts.benchmarks.chaos_restore import restore_blow
from scripts.benchmarks.chaos_traffic import Injector, OutageClock
from scripts.benchmarks.fake_clock import FakeClock
from scripts.benchmarks.system_run import RunningSystem, wait_for

WINDOW_WAIT = 5.0  # seconds a blow to the session may take to be on record as a disconnect window (a cold start)
API = "drops-api"
FAULTS = ("bridge", "monitor", "disconnect", "pause", "clock", "restore")
PAUSE_S = (2.0, 12.0)  # how long a `pause` blow keeps the watchdog stopped
CLOCK_STEP = 3600  # seconds a `clock` blow steps the wall clock back; the next one forward again
RESTORE_EVERY = 60.0  # seconds at least between two `restore` blows (each a stop and a cold start of everything)


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
