"""Whether and when to restart a program whose child ended: pure functions, so they are tested as such.

`exit_outcome` says what an exit means (stay stopped, restart at once, restart
by the policy, or fail: restarting would not help); `decide` says when, from
the failure history.

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

import enum
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from watchdog.shared import alert_rules
from watchdog.shared.exitcodes import EXIT_CONFIG, EXIT_NEEDS_OPERATOR


@dataclass(frozen=True)
class ExitRule:
    """What a no-restart exit code means: the alert rule it fires and the words of its cause."""

    rule: str
    meaning: str


# The core's words; a program's hooks may name them in its own (the bridge: exit 4 is `not_paired`).
EXIT_RULES: Mapping[int, ExitRule] = {
    EXIT_CONFIG: ExitRule(alert_rules.CONFIG_FAILED, "configuration error"),
    EXIT_NEEDS_OPERATOR: ExitRule(alert_rules.NEEDS_OPERATOR, "needs an operator"),
}


class After(enum.Enum):
    """Why the watcher stopped a child: what to do once it has exited."""

    RECOVER = "recover"  # a failed check: restart with backoff, counts towards a crash loop
    RESTART_NOW = "restart now"  # operator restart: at once, not counted
    STAY_STOPPED = "stay stopped"  # shutdown, reload


class Next(enum.Enum):
    STOP = "stop"  # stays stopped: a planned stop
    STOP_CLEAN = "stop clean"  # exited 0 and its restart mode leaves it stopped
    RESTART_NOW = "restart now"
    RESTART = "restart"  # after the delay `decide` gives
    FAIL = "fail"  # not restarted until an operator asks


@dataclass(frozen=True)
class Outcome:
    next: Next
    cause: str = ""  # for FAIL: why, for the log, the record and the alert
    rule: str = ""  # for FAIL: the alert rule


def exit_outcome(code: int, cause: str, restart: str, no_restart_exit_codes: Collection[int],
                 planned: After | None, last_words: str = "", exit_rules: Mapping[int, ExitRule] = EXIT_RULES) -> Outcome:
    """What an exit means. `cause`: the exit's (or, for a planned stop, the stop's); `planned`: None when the
    child ended on its own; `last_words`: its last STATUS= before it was ready (a refusal says why);
    `exit_rules`: the program's words for its no-restart codes (its hooks')."""
    if planned is After.STAY_STOPPED:
        return Outcome(Next.STOP)
    if planned is After.RESTART_NOW:
        return Outcome(Next.RESTART_NOW)
    if planned is After.RECOVER:
        return Outcome(Next.FAIL, f"{cause}; restart = never", alert_rules.HANG) if restart == "never" else \
            Outcome(Next.RESTART)
    if code in no_restart_exit_codes:
        known = exit_rules.get(code)
        meaning = last_words or (known.meaning if known else "a no-restart exit code")
        return Outcome(Next.FAIL, f"{cause}: {meaning}", known.rule if known else alert_rules.CONFIG_FAILED)
    if restart == "never" or (restart == "on-failure" and code == 0):
        if code == 0:
            return Outcome(Next.STOP_CLEAN)
        return Outcome(Next.FAIL, f"{cause}; restart = never", alert_rules.CONFIG_FAILED)
    return Outcome(Next.RESTART)


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
