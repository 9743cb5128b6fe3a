"""The clock seam's boot clock and step detection (the watchdog's record of a step: tests/watchdog/core/test_self_watch.py)."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

from watchdog.shared import clock

T0 = datetime(2026, 12, 6, 9, 0, tzinfo=timezone.utc).timestamp()


def test_a_step_is_seen_once_with_its_size_and_time_passing_is_no_step(fixed_clock: Callable) -> None:
    fixed_clock(T0)
    steps = clock.StepDetector()
    clock.pass_for_tests(600)
    assert steps.check() is None
    clock.step_for_tests(-3603)
    assert round(steps.check()) == -3603 and steps.check() is None
    fixed_clock(T0 + 90)  # setting a fixed clock again steps it (the boot's clock stood still)
    assert round(steps.check()) == 90 + 3603 - 600
    assert clock.describe_step(-3603) == "clock stepped back 1 h 0 min 3 s"
    assert clock.describe_step(12.4) == "clock stepped forward 12 s"


def test_a_moment_is_moved_onto_the_stepped_clock_and_ordered_by_the_boots_clock(fixed_clock: Callable) -> None:
    fixed_clock(T0)
    before = clock.instant()
    assert clock.on_this_clock(before) == T0 and clock.Instant.parse(str(before)) == before
    clock.pass_for_tests(10)
    assert clock.on_this_clock(before) == T0  # no step: its own wall time, to the microsecond
    clock.step_for_tests(-3600)
    after = clock.instant()
    assert clock.on_this_clock(before) == T0 - 3600 and clock.seconds_since(before) == 10
    assert clock.later(before, after) is after and after.wall < before.wall
    other_boot = before._replace(boot_id="another-boot")
    assert clock.on_this_clock(other_boot) == T0 and clock.later(other_boot, after) is other_boot


def test_the_real_clocks_run_without_a_step() -> None:
    steps = clock.StepDetector()
    first = clock.instant()
    assert first.this_boot() and len(clock.boot_id()) == 36
    assert clock.seconds_since(first) >= 0 and steps.check() is None
