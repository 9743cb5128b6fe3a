"""Coalescing until the group is quiet (issue 22): a busy group's message acknowledgements wait until it has been
quiet for `feedback.coalesce_s`, at most `feedback.coalesce_max_s` after the oldest, and go as one message. A fixed
window from the first sent a busy group's first message early and then needed a second one. Through the real
monitor, bridge and simulator (the pace off, so a message goes the moment the monitor posts it)."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from monitors.config import FeedbackConfig
from monitors.drops_store import FEEDBACK_QUEUED, open_drops_store
from monitors.feedback import FeedbackSender, coalesce_due
from tests.bridge_support import inject, start_bridge, start_sim
from tests.conftest import BASE_CONFIG, GROUP_A, MESSAGE_ACK, Processes, wait_until
from tests.monitor_support import all_sent, query, start_monitor
from tests.monitors.test_fate import acknowledged
from watchdog.components import load
from watchdog.shared.config import ConfigError

CONTRACTOR = "27710000001@s.whatsapp.net"
OTHER = "27710000002@s.whatsapp.net"
APART_S = 1.0  # between two drops of the busy group: well inside its quiet period


def coalescing(quiet: float, most: float) -> str:
    return BASE_CONFIG.replace(
        MESSAGE_ACK, f'feedback = {{ ack = "message", coalesce_s = {quiet:g}, coalesce_max_s = {most:g} }}', 1)


def recorded(data_dir: Path) -> int:
    return sum(count for count, in query(data_dir, "SELECT COUNT(*) FROM feedback"))  # 0 before the store exists


def busy_group(procs: Processes, data_dir: Path, write_config, quiet: float, most: float,  # noqa: ANN001
               count: int) -> tuple[list[int], list[dict]]:
    """lawley coalescing with `quiet` and `most`; `count` drops to GROUP_A, each recorded before the next and at
    least APART_S after the one before. The number of messages sent just before each drop was posted, and every
    message sent once all the acknowledgements are."""
    write_config(coalescing(quiet, most))
    _, sim_url = start_sim(procs, data_dir)
    start_bridge(procs, data_dir)
    start_monitor(procs, "lawley")
    before: list[int] = []
    posted = -APART_S
    for n in range(count):
        time.sleep(max(0.0, posted + APART_S - time.monotonic()))  # the scenario's pace, not a wait for a result
        before.append(len(all_sent(sim_url)))
        posted = time.monotonic()
        inject(sim_url, f"DR10000{n:02d} done", GROUP_A, CONTRACTOR if n % 2 == 0 else OTHER)
        wait_until(lambda n=n: recorded(data_dir) == n + 1, timeout=30, message=f"drop {n + 1} recorded")
    wait_until(lambda: query(data_dir, "SELECT COUNT(*) FROM feedback WHERE status = 'sent'") == [(count,)],
               timeout=30, message=f"the {count} acknowledgements sent")
    return before, all_sent(sim_url)


def carried(sent: list[dict], count: int) -> list[int]:
    """How many of the `count` drops each message names; every drop named exactly once over all of them."""
    named = [[f"DR10000{n:02d}" for n in range(count) if f"DR10000{n:02d}" in m["text"]] for m in sent]
    assert sorted(drop for drops in named for drop in drops) == [f"DR10000{n:02d}" for n in range(count)]
    return [len(drops) for drops in named]


@pytest.mark.slow
def test_a_busy_groups_acks_wait_until_it_is_quiet_and_go_as_one_message(procs: Processes, data_dir: Path,
                                                                          write_config) -> None:  # noqa: ANN001
    # 5 drops over at least 4 s: a fixed 3 s window from the first sent the first ones on their own
    before, sent = busy_group(procs, data_dir, write_config, quiet=3.0, most=60.0, count=5)
    assert before == [0] * 5  # nothing went while the group was busy
    assert carried(sent, 5) == [5]  # then one message for the five
    assert sent[0]["mentioned_jids"] == [CONTRACTOR, OTHER]


@pytest.mark.slow
def test_a_group_busy_for_longer_than_coalesce_max_s_hears_back_meanwhile(procs: Processes, data_dir: Path,
                                                                           write_config) -> None:  # noqa: ANN001
    # never quiet for 3 s during 10 drops (at least 9 s): the cap of 4 s after the oldest sends while it is busy
    before, sent = busy_group(procs, data_dir, write_config, quiet=3.0, most=4.0, count=10)
    assert before[-1] >= 1, f"no acknowledgement went while the group was busy ({before})"
    counts = carried(sent, 10)
    assert 2 <= len(counts) < 10 and counts[0] >= 2, counts  # coalesced, in more than one message


def test_an_ack_taken_back_from_a_banned_numbers_outbox_is_not_held_again_and_takes_its_group_with_it(
        write_config) -> None:  # noqa: ANN001
    """It waited its quiet period before it was first posted; held again, a failover would add another one."""
    config = load(write_config(coalescing(quiet=30.0, most=60.0)))
    drops = open_drops_store(config)
    try:
        back = acknowledged(config, drops, "DR1000001")
        drops.finish_feedback(back, FEEDBACK_QUEUED, bridge_message_id="3EB0Q1")  # in the first number's outbox
        assert drops.requeue_feedback([drops.feedback(back.id)]) == [back.id]  # withdrawn on the failover
        fresh = acknowledged(config, drops, "DR1000002")
        sender = FeedbackSender(config, config.project("lawley"), drops)
        units, hold = sender._units(drops.pending_feedback("lawley"))
        assert hold is None and [[row.id for row in unit] for unit in units] == [[back.id, fresh.id]]
        later = acknowledged(config, drops, "DR1000003")  # a group with nothing posted before waits as ever
        units, hold = sender._units([row for row in drops.pending_feedback("lawley") if row.id == later.id])
        assert units == [] and hold is not None and 29 < hold <= 30
    finally:
        drops.close()


def test_coalesce_due_is_the_quiet_period_after_the_newest_capped_after_the_oldest() -> None:
    rule = FeedbackConfig(coalesce_s=30.0, coalesce_max_s=60.0)
    assert coalesce_due([100.0], rule) == 130.0  # alone: once quiet
    assert coalesce_due([100.0, 110.0, 125.0], rule) == 155.0  # each newer one restarts the quiet period
    assert coalesce_due([100.0, 130.0, 150.0], rule) == 160.0  # but no later than 60 s after the oldest
    fixed = FeedbackConfig(coalesce_s=3.0, coalesce_max_s=3.0)  # equal: the fixed window from the first
    assert coalesce_due([100.0, 102.0], fixed) == 103.0


def test_the_default_is_30_s_of_quiet_at_most_60_s(write_config) -> None:  # noqa: ANN001
    feedback = load(write_config(BASE_CONFIG.replace(MESSAGE_ACK, 'feedback = { ack = "message" }', 1))).project(
        "lawley").feedback
    assert (feedback.coalesce_s, feedback.coalesce_max_s) == (30.0, 60.0)


@pytest.mark.parametrize("keys", ["coalesce_s = 10, coalesce_max_s = 5", "coalesce_max_s = 61"])
def test_a_cap_below_the_quiet_period_or_past_60_s_is_a_config_error_naming_the_key(keys: str,
                                                                                      write_config) -> None:  # noqa: ANN001
    text = BASE_CONFIG.replace(MESSAGE_ACK, f'feedback = {{ ack = "message", {keys} }}', 1)
    with pytest.raises(ConfigError, match=r"projects\[lawley\]\.feedback\.coalesce_max_s: must be coalesce_s \(\d+\) "
                                          r"to 60 seconds"):
        load(write_config(text))
