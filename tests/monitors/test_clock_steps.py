"""The drops side across wall-clock steps of an hour, on drops.db and on PostgreSQL: webhook retries stay on time,
events never go back in time, and a window opened after a step back is still reported.

The clock seam (watchdog.shared.clock) is moved as a host's clocks move: `step_for_tests` steps the wall clock
alone, `pass_for_tests` lets time pass on both the wall clock and the boot's clock.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

import aiohttp
import pytest

from bridge.schema import format_ts

from bridge.store import Store
from bridge.transport import IncomingMessage, Source
from monitors.api.webhooks import Deliverer, WokenSchedule
from monitors.drops_store import DropsDB, Submission, open_drops_store
from monitors.follow import StoreFollower
from monitors.main import MonitorProcess
from scripts.benchmarks.webhook_receiver import WebhookReceiver
from tests.conftest import BASE_CONFIG, GROUP_A, until
from tests.monitors.test_webhooks import SECRET
from tests.pg import free_port
from watchdog.shared import clock
from monitors.config import WebhookConfig
from watchdog.components import Config, load
from watchdog.shared.recovery_log import RecoveryLog

T0 = datetime(2026, 12, 6, 9, 0, tzinfo=timezone.utc)
HOUR = 3600.0
CONTRACTOR = "27710000001@s.whatsapp.net"


@pytest.fixture
def config(write_config, drops_backend: str) -> Config:  # noqa: ANN001
    return load(write_config(BASE_CONFIG + drops_backend))


@pytest.fixture
def drops(config: Config) -> Iterator[DropsDB]:
    store = open_drops_store(config)
    yield store
    store.close()


def record(drops: DropsDB, number: str, message_id: str) -> None:
    drops.record("lawley", "main", 1, [Submission(number, GROUP_A, "Lawley Fibre", CONTRACTOR, message_id,
                                                  format_ts(T0), False)], None)


def test_events_never_carry_an_earlier_time_than_the_one_before(drops: DropsDB, fixed_clock: Callable) -> None:
    fixed_clock(T0)
    record(drops, "DR1000001", "M1")
    clock.step_for_tests(-HOUR)
    record(drops, "DR1000002", "M2")
    clock.pass_for_tests(1)
    record(drops, "DR1000003", "M3")
    times = [event.created_at for event in drops.outbox.due("all", now=format_ts(T0 + timedelta(days=1)))]
    assert len(times) == 3 and times == sorted(times) and times[0] == format_ts(T0)


@pytest.mark.parametrize("deliverer_down", [False, True], ids=["seen-running", "while-down"])
def test_a_retry_scheduled_before_the_clock_stepped_back_an_hour_is_not_held_for_the_hour(
        drops: DropsDB, fixed_clock: Callable, deliverer_down: bool) -> None:
    """The host's clock ran an hour ahead, then NTP corrected it: the retry is due at once, not in an hour."""
    fixed_clock(None)  # a running clock (the receiver checks the signature's time), set right again afterwards
    clock.step_for_tests(HOUR)
    record(drops, "DR1000001", "M1")
    receiver = WebhookReceiver(SECRET)
    port = free_port()
    hook = WebhookConfig(name="crm", url=f"http://127.0.0.1:{port}/hook", secret=SECRET, max_attempts=30,
                         backoff_initial=30.0, backoff_max=60.0, timeout=2.0,
                         start_at="oldest")  # the event recorded before the deliverer started

    async def scenario() -> None:
        async with aiohttp.ClientSession() as http:
            def start() -> asyncio.Task:
                deliverer = Deliverer([hook], drops.outbox, http, lambda *_: None)
                return asyncio.create_task(deliverer.run(WokenSchedule()))

            task = start()
            await until(lambda: drops.outbox.counts("crm").pending == 1 and drops.outbox.next_retry(
                "crm", format_ts(clock.now())), message="a failed attempt and its retry scheduled")
            if deliverer_down:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            await asyncio.to_thread(receiver.start, port)
            clock.step_for_tests(-HOUR)
            if deliverer_down:
                task = start()
            try:
                await until(lambda: receiver.accepted(), message="the retry delivered after the step")
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    try:
        asyncio.run(scenario())
    finally:
        receiver.close()
    assert receiver.bad_signatures == 0 and list(receiver.accepted().values()) == [1]


def test_a_window_opened_after_the_clock_stepped_back_is_still_reported(config: Config, fixed_clock: Callable) -> None:
    """Windows are followed by id: the second starts an hour before the first on the corrected clock."""
    fixed_clock(T0)
    store = Store(config.account("main").store)
    (monitor,) = MonitorProcess(config, [config.project("lawley")]).monitors
    follower = StoreFollower(config.account("main").store)

    def window(start: datetime) -> int:
        opened = store.start_window(format_ts(start), "network")
        store.add_messages([IncomingMessage(f"M{opened.id}", GROUP_A, CONTRACTOR, f"DR100000{opened.id}",
                                            start + timedelta(seconds=5), Source.OFFLINE, chat_name="Lawley")])
        store.end_window(format_ts(start + timedelta(seconds=20)))
        store.finish_backfill(opened.id, "done")
        follower.changed()
        asyncio.run(monitor.catch_up(follower))
        return opened.id

    try:
        first = window(T0 + timedelta(hours=1))  # on a clock an hour ahead
        second = window(T0)  # after NTP set it right
        reports = [r for r in RecoveryLog(config.watchdog.recovery_log).read() if r["event"] == "backfill"]
        assert [(r["window_id"], r["drops"]) for r in reports] == [(first, ["DR1000001"]), (second, ["DR1000002"])]
    finally:
        follower.close()
        monitor.drops.close()
        store.close()
