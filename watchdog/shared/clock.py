"""The one wall clock of every process: the time of day is read here and nowhere else.

Stores stamp rows with it, logs and the console show it, and WhatsApp's own timestamps are matched against it.
Reading it in one place is what lets a test fix the time of day for all of them at once (``set_for_tests``),
so no test depends on the date it runs on. Durations and deadlines are not times of day: they use
``time.monotonic()``, or, where a stamp must outlive the process, the boot's own clock (``instant()``).

Why the boot's clock: the wall clock is stepped when a host's time is corrected (NTP stepping minutes or
hours, a VM restored from a snapshot), and a deadline or "within the last 2 minutes" stored as a time of day
is then off by the step. CLOCK_BOOTTIME never steps, counts suspend, and is one clock for every process of a
boot (named by the kernel's boot id), so an `Instant` (wall + boot id + boot time) can be compared and moved
onto today's wall clock (`on_this_clock`) by any process of the same boot. The offset wall - boot time is
constant unless the wall clock is stepped: `StepDetector` watches it.
"""
from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import NamedTuple

STEP_THRESHOLD = 2.0  # seconds: a smaller change of wall - boot time is NTP slewing or the reading's jitter
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")

SHIFT_ENV = "WA_WATCHDOG_CLOCK_SHIFT_DAYS"  # every process of a run reads the time of day this far ahead


def _shift_from_environment() -> float:
    """CI's pass with the date far ahead (.ci/run): no test may depend on the day it runs. Not a setting."""
    try:
        return float(os.environ.get(SHIFT_ENV) or 0) * 86400
    except ValueError:
        return 0.0


_ENV_SHIFT = _shift_from_environment()
_fixed: tuple[float, float] | None = None  # (wall, boot time) a test stopped the clocks at
_wall_shift = _ENV_SHIFT  # the run's shift, a test's step of the wall clock, or time it let pass
_boot_shift = 0.0  # time a test let pass


def _read() -> tuple[float, float]:
    wall, boot = _fixed or (time.time(), time.clock_gettime(time.CLOCK_BOOTTIME))
    return wall + _wall_shift, boot + _boot_shift


def now_s() -> float:
    """Seconds since the epoch (``time.time()`` unless a test fixed the clock)."""
    return _read()[0]


def now() -> datetime:
    """The current time of day, timezone-aware UTC."""
    return datetime.fromtimestamp(now_s(), timezone.utc)


def local_now() -> datetime:
    """The current time of day in the host's timezone, for what people read (the console's header, today)."""
    return now().astimezone()


def boottime() -> float:
    """Seconds since boot, suspend included (CLOCK_BOOTTIME): never stepped, the same in every process."""
    return _read()[1]


@cache
def boot_id() -> str:
    """The kernel's id of this boot ("" if unreadable: then no stamp counts as taken in this boot)."""
    try:
        return BOOT_ID_FILE.read_text(encoding="ascii").strip()
    except OSError:
        return ""


class Instant(NamedTuple):
    """A moment as both clocks saw it: stored as text `boot_id boottime wall` (`str()` / `parse`)."""

    boot_id: str
    boottime: float
    wall: float  # epoch seconds, on the wall clock of the moment it was taken

    def __str__(self) -> str:
        return f"{self.boot_id or '-'} {self.boottime!r} {self.wall!r}"  # repr: parse gives the same floats

    @classmethod
    def parse(cls, text: str | None) -> Instant | None:
        """The instant `str()` wrote; None for None or anything else (an older release's value)."""
        try:
            boot, boot_s, wall = (text or "").split()
            return cls("" if boot == "-" else boot, float(boot_s), float(wall))
        except ValueError:
            return None

    def this_boot(self) -> bool:
        return bool(self.boot_id) and self.boot_id == boot_id()


def instant(wall: float | None = None) -> Instant:
    """Now, or the recent moment the wall clock read `wall` (assuming no step since, which the caller's
    recent reading makes as sure as a reading can be)."""
    now_wall, now_boot = _read()
    return Instant(boot_id(), now_boot - (now_wall - wall if wall is not None else 0.0),
                   now_wall if wall is None else wall)


def seconds_since(moment: Instant) -> float:
    """Time elapsed since `moment`: on the boot's clock in the same boot (no step distorts it), else the wall's."""
    now_wall, now_boot = _read()
    return now_boot - moment.boottime if moment.this_boot() else now_wall - moment.wall


def on_this_clock(moment: Instant) -> float:
    """When `moment` was on today's wall clock: its own wall time, unless the wall clock was stepped by more
    than STEP_THRESHOLD since (same boot), then now minus the time elapsed on the boot's clock."""
    if not moment.this_boot():
        return moment.wall
    rebased = now_s() - seconds_since(moment)
    return moment.wall if abs(rebased - moment.wall) <= STEP_THRESHOLD else rebased


def later(a: Instant, b: Instant) -> Instant:
    """The later of two moments: by the boot's clock in the same boot (a step may have reordered the wall's)."""
    if a.boot_id and a.boot_id == b.boot_id:
        return a if a.boottime >= b.boottime else b
    return a if a.wall >= b.wall else b


def describe_step(seconds: float) -> str:
    """`clock stepped back 1 h 0 min 3 s` / `clock stepped forward 12 s`: what the recovery log says."""
    left = round(abs(seconds))
    hours, minutes, secs = left // 3600, left % 3600 // 60, left % 60
    parts = [f"{hours} h"] if hours else []
    parts += [f"{minutes} min"] if hours or minutes else []
    return f"clock stepped {'back' if seconds < 0 else 'forward'} {' '.join([*parts, f'{secs} s'])}"


class StepDetector:
    """Notices a step of the wall clock between two calls (long-running processes call `check` from their loops)."""

    def __init__(self, threshold: float = STEP_THRESHOLD) -> None:
        self.threshold = threshold
        self._offset = self._current()

    @staticmethod
    def _current() -> float:
        wall, boot = _read()
        return wall - boot

    def check(self) -> float | None:
        """The step since the last call in seconds (negative: back), or None if the wall clock was not stepped."""
        offset = self._current()
        step, self._offset = offset - self._offset, offset
        return step if abs(step) > self.threshold else None


# -- tests move the clocks through these ----------------------------------------------------------------

def set_for_tests(when: datetime | float | None) -> None:
    """Fix the wall clock at `when` (an aware datetime or epoch seconds) and stop the boot's clock until set
    again: a fixed clock is time standing still. None lets both run."""
    global _fixed, _wall_shift, _boot_shift
    boot = boottime()
    _wall_shift = _boot_shift = 0.0
    if when is None:
        _fixed, _wall_shift = None, _ENV_SHIFT
        return
    _fixed = (when.timestamp() if isinstance(when, datetime) else when, boot)


def step_for_tests(seconds: float) -> None:
    """Step the wall clock by `seconds` (negative: back), as NTP correcting the host's time does."""
    global _wall_shift
    _wall_shift += seconds


def pass_for_tests(seconds: float) -> None:
    """Let `seconds` pass on both clocks at once (a fixed clock moves on by that much)."""
    global _wall_shift, _boot_shift
    _wall_shift += seconds
    _boot_shift += seconds
