"""The pace on its own (bridge/pace.py), on a clock the test moves: budgets, the gap per chat, order, priority,
the ramp after a reconnect and the queue's projection. No waiting: `now` is the test's."""
from __future__ import annotations

import random

from bridge.pace import OPERATOR, PaceConfig, Pacer, Queued
from bridge.supervision import hooks
from watchdog.core.probes import OK, HealthResult

A, B, C = "1@g.us", "2@g.us", "3@g.us"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def pacer(**pace: object) -> tuple[Pacer, Clock]:
    clock = Clock()
    settings = dict(per_minute=0, per_hour=0, per_day=0, chat_gap_s=0.0, chat_jitter_s=0.0, typing=False, ramp_s=0.0)
    return Pacer(PaceConfig(**{**settings, **pace}), now=clock, rng=random.Random(7)), clock


def row(seq: int, chat: str = A, priority: str = "", reaction: bool = False) -> Queued:
    return Queued(seq, chat, priority, reaction, 10)


def send_all(p: Pacer, clock: Clock, rows: list[Queued]) -> list[tuple[int, float]]:
    """Drain `rows` as the outbox does: always the plan's first, when it is due."""
    out: list[tuple[int, float]] = []
    rows = list(rows)
    while rows:
        first, due = p.plan(rows).order[0]
        clock.t = max(clock.t, due)
        p.record(first.chat, first.reaction)
        out.append((first.seq, clock.t))
        rows.remove(first)
    return out


def test_the_minute_budget_is_spread_evenly_and_never_exceeded() -> None:
    p, clock = pacer(per_minute=5)
    sent = send_all(p, clock, [row(i, chat) for i, chat in enumerate([A, B, C] * 10)])
    times = [t for _, t in sent]
    assert all(b - a >= 12.0 - 1e-9 for a, b in zip(times, times[1:]))  # 5 a minute = one every 12 s
    assert max(sum(1 for t in times if start <= t < start + 60) for start in times) <= 5


def test_the_hour_and_day_budgets_hold_back_the_rest() -> None:
    p, clock = pacer(per_hour=3, per_day=4)
    sent = send_all(p, clock, [row(i, [A, B][i % 2]) for i in range(5)])
    times = [t - 1000.0 for _, t in sent]
    assert times[:3] == [0.0, 0.0, 0.0]
    assert times[3] == 3600.0  # the hour is full until the first of the three is an hour old
    assert times[4] == 86400.0  # the day holds 4


def test_one_chat_keeps_its_order_and_its_gap_with_jitter() -> None:
    p, clock = pacer(chat_gap_s=30.0, chat_jitter_s=30.0)
    sent = send_all(p, clock, [row(1, A), row(2, B), row(3, A), row(4, A), row(5, B)])
    order_a = [seq for seq, _ in sent if seq in (1, 3, 4)]
    assert order_a == [1, 3, 4]
    at = dict(sent)
    gaps = [at[3] - at[1], at[4] - at[3], at[5] - at[2]]
    assert all(30.0 <= gap <= 60.0 for gap in gaps), gaps
    assert len({round(g, 6) for g in gaps}) == 3  # random, not a fixed period
    assert at[2] == at[1]  # another chat need not wait for A's gap


def test_operator_feedback_goes_first_without_reordering_its_chat() -> None:
    p, clock = pacer(per_minute=6)
    queue = [row(1, A), row(2, A), row(3, B), row(4, B, OPERATOR), row(5, C)]
    order = [seq for seq, _ in send_all(p, clock, queue)]
    assert order.index(3) < order.index(4) < order.index(1)  # B's chat goes first, 3 still before 4
    assert order.index(1) < order.index(2)


def test_reactions_skip_the_chat_gap_and_have_their_own_budget() -> None:
    p, clock = pacer(per_minute=1, reactions_per_minute=60, chat_gap_s=30.0)
    queue = [row(1, A), row(2, A, reaction=True), row(3, B), row(4, B, reaction=True), row(5, A, reaction=True)]
    at = {seq: t - 1000.0 for seq, t in send_all(p, clock, queue)}
    assert at[1] == 0.0 and at[3] == 60.0  # messages: one a minute
    # Reactions: one a second at most, not held by A's 30 s gap nor by the message budget; 4 waits for 3 only
    # because one chat's order is kept.
    assert [at[2], at[5], at[4]] == [0.0, 1.0, 60.0]


def test_after_a_reconnect_the_rate_ramps_back_up() -> None:
    p, clock = pacer(per_minute=6, ramp_s=600.0)
    p.connected()
    assert p.spacing(clock.t) == 40.0  # a quarter of the rate at first
    assert p.spacing(clock.t + 300.0) == 10.0 / 0.625
    assert p.spacing(clock.t + 600.0) == 10.0
    assert p.spacing(clock.t + 6000.0) == 10.0


def test_the_plan_gives_positions_and_when_the_queue_is_empty() -> None:
    p, clock = pacer(per_minute=6)
    p.record(A, False)
    plan = p.plan([row(7, A), row(8, B), row(9, C)], depth=5)
    assert [plan.position(seq) for seq in (7, 8, 9)] == [1, 2, 3]
    assert plan.position(99) is None
    assert [t - 1000.0 for _, t in plan.order] == [10.0, 20.0, 30.0]
    assert plan.drained_at == 1000.0 + 50.0  # two more rows beyond those projected, at the budget's rate


def test_typing_lasts_as_long_as_a_person_would_type_capped() -> None:
    pace = PaceConfig(typing_chars_per_s=10.0, typing_max_s=3.0)
    assert pace.typing_s("x" * 20) == 2.0
    assert pace.typing_s("x" * 200) == 3.0
    assert PaceConfig(typing=False).typing_s("hello") == 0.0


def test_the_watchdog_reads_the_queue_from_the_bridges_health_for_status_and_metrics() -> None:
    sending = {"paused": False, "reason": "", "until": None, "rate_limited": 0, "depth": 4,
               "next_send_at": "2026-12-06T17:00:12+00:00", "next_send_s": 12.0, "drain_s": 95.5}
    probe = HealthResult(OK, "connected", body={"connected": True, "outbox_depth": 4, "sending": sending})
    assert hooks.status_fields(probe)["connection"]["sending"] == sending
    gauges = hooks.gauges(probe)
    assert {name: value for name, (_, value) in gauges.items()} == {
        "outbox_depth": 4.0, "outbox_next_send_seconds": 12.0, "outbox_drain_seconds": 95.5, "sending_paused": 0.0}
    assert hooks.gauges(None) == {} and hooks.gauges(HealthResult(OK, "connected", body={"sending": None})) == {}
