"""The restart policy as the pure function it is: graduated steps with jitter, a cap, a crash loop that alerts
without jumping to the cap, and a fresh start after a healthy spell (an empty history)."""
from __future__ import annotations

import pytest

from bridge.supervision import hooks as bridge_hooks
from watchdog.core.restart_policy import After, Next, RestartPolicy, decide, exit_outcome, standby_delay

POLICY = RestartPolicy(initial=0.1, maximum=30.0, crash_loop_exits=5, crash_loop_window=60.0)


def delays(failures: int, jitter: float = 0.0, spacing: float = 1.0) -> list[float]:
    times = [i * spacing for i in range(failures)]
    return [decide(times[:n], times[n - 1], POLICY, jitter).delay for n in range(1, failures + 1)]


def test_the_first_failure_restarts_at_once_then_each_one_doubles_the_delay() -> None:
    assert delays(6) == pytest.approx([0.0, 0.1, 0.2, 0.4, 0.8, 1.6])


def test_the_fifth_failure_in_a_minute_is_a_crash_loop_but_the_delay_keeps_its_steps() -> None:
    times = [0.0, 1.0, 2.0, 3.0, 4.0]
    fourth, fifth = decide(times[:4], 3.0, POLICY, 0.0), decide(times, 4.0, POLICY, 0.0)
    assert not fourth.crash_loop and fifth.crash_loop and fifth.recent == 5
    assert fifth.delay == pytest.approx(0.8)  # not backoff_max: graduated, as the old jump to 30 s was not


def test_the_delay_is_capped_and_jitter_stays_within_one_initial_step() -> None:
    assert delays(20)[-1] == 30.0
    jittered = delays(6, jitter=0.999)
    assert all(0 <= j - d < 0.1 for j, d in zip(jittered[1:], delays(6)[1:]))
    assert decide([0.0, 1.0], 1.0, POLICY, 0.5).delay == pytest.approx(0.15)


def test_failures_outside_the_window_do_not_count_towards_a_crash_loop() -> None:
    times = [0.0, 100.0, 200.0, 300.0, 400.0]
    decision = decide(times, 400.0, POLICY, 0.0)
    assert not decision.crash_loop and decision.recent == 1 and decision.attempt == 5


def test_an_empty_history_after_a_healthy_spell_restarts_at_once_again() -> None:
    assert decide([500.0], 500.0, POLICY, 0.9).delay == 0.0


def test_a_dying_standby_backs_off_from_its_first_exit() -> None:
    assert [standby_delay(n, POLICY, 0.0) for n in (1, 2, 3)] == pytest.approx([0.1, 0.2, 0.4])


@pytest.mark.parametrize(("code", "restart", "planned", "expected", "rule"), [
    (1, "always", None, Next.RESTART, ""),
    (0, "always", None, Next.RESTART, ""),  # a child is never supposed to exit
    (0, "on-failure", None, Next.STOP_CLEAN, ""),
    (1, "on-failure", None, Next.RESTART, ""),
    (0, "never", None, Next.STOP_CLEAN, ""),
    (1, "never", None, Next.FAIL, "config_failed"),
    (2, "always", None, Next.FAIL, "config_failed"),
    (4, "always", None, Next.FAIL, "needs_operator"),
    (7, "always", None, Next.FAIL, "config_failed"),  # a program's own no-restart code
    (-9, "always", After.RECOVER, Next.RESTART, ""),  # stopped for a failed check
    (-9, "never", After.RECOVER, Next.FAIL, "hang"),
    (-15, "never", After.RESTART_NOW, Next.RESTART_NOW, ""),  # an operator restart restarts whatever the mode
    (2, "always", After.STAY_STOPPED, Next.STOP, ""),  # shutdown: even a no-restart code just stops
])
def test_what_an_exit_means(code: int, restart: str, planned: After | None, expected: Next, rule: str) -> None:
    outcome = exit_outcome(code, "exit code", restart, (2, 4, 7), planned)
    assert (outcome.next, outcome.rule) == (expected, rule)


def test_a_refusal_at_start_names_itself_in_the_failure() -> None:
    assert exit_outcome(2, "exit code 2", "always", (2,), None).cause == "exit code 2: configuration error"
    refused = exit_outcome(2, "exit code 2", "always", (2,), None, last_words="store messages.db is corrupt")
    assert refused.cause == "exit code 2: store messages.db is corrupt"
    assert exit_outcome(1, "exit code 1", "never", (), None).cause == "exit code 1; restart = never"


def test_a_programs_hooks_name_its_exits_in_its_own_words() -> None:
    """The core says `needs_operator` for exit 4; the bridge's hooks say what it means for a session."""
    assert exit_outcome(4, "exit code 4", "always", (2, 4), None).cause == "exit code 4: needs an operator"
    bridge = exit_outcome(4, "exit code 4", "always", (2, 4), None, exit_rules=bridge_hooks.exit_rules)
    assert (bridge.rule, bridge.cause) == ("not_paired", "exit code 4: needs an operator (not paired)")
    assert exit_outcome(2, "exit code 2", "always", (2, 4), None, exit_rules=bridge_hooks.exit_rules).rule == \
        "config_failed"
