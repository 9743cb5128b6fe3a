"""When to restart a program that failed: a pure function of its failure history, so it is tested as one.

The first failure after a healthy spell restarts at once (most failures are
one-offs, and the bridge's recovery time is what this product is judged by).
Each further failure doubles the delay, from `initial` up to `maximum`, plus
up to one `initial` of jitter so that programs failing together do not
restart in lockstep. A healthy spell (`backoff_reset_after`) clears the
history. `crash_loop_exits` failures within `crash_loop_window` are a crash
loop: alerted once, but the delay keeps its steps (no jump to the maximum).

Written out rather than taken from tenacity: it is one line of arithmetic, and
tenacity's wait objects want a RetryCallState, which is its internal.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RestartPolicy:
    initial: float = 0.1
    maximum: float = 30.0
    crash_loop_exits: int = 5
    crash_loop_window: float = 60.0


@dataclass(frozen=True)
class Decision:
    delay: float  # seconds before the restart
    attempt: int  # failures since the last healthy spell, this one included
    crash_loop: bool  # crash_loop_exits or more of them within crash_loop_window
    recent: int  # failures within crash_loop_window


def decide(failures: Sequence[float], now: float, policy: RestartPolicy, jitter: float) -> Decision:
    """`failures`: monotonic times since the last healthy spell, this one last; `jitter` in [0, 1)."""
    attempt = len(failures)
    recent = sum(1 for t in failures if now - t <= policy.crash_loop_window)
    delay = 0.0 if attempt <= 1 else min(policy.maximum, policy.initial * (2 ** (attempt - 2) + jitter))
    return Decision(delay, attempt, recent >= policy.crash_loop_exits, recent)


def standby_delay(failures: int, policy: RestartPolicy, jitter: float) -> float:
    """A warm standby that keeps dying: the same steps, counted by its own failures (the first one waits too)."""
    return min(policy.maximum, policy.initial * (2 ** max(failures - 1, 0) + jitter))
