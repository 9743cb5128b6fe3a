"""Monitors woken by store changes (monitors/store_watch.py, ProjectMonitor.follow): one inotify instance, not a 20 ms poll."""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import psutil
import pytest
from loguru import logger

from bridge.schema import parse_ts

from bridge.store import Store
from bridge.transport import IncomingMessage, Receipt, ReceiptKind
from monitors import store_watch
from monitors.follow import POLL_INTERVAL, SAFETY_INTERVAL, SETTLE_DELAYS
from monitors.store_watch import StoreWakes
from monitors.receipts import GRACE
from tests.conftest import GROUP_A, GROUP_B, Processes, wait_until
from tests.monitor_support import query, start_monitor
from tests.sim_helpers import TWO_SESSIONS_CONFIG
from watchdog.shared.waiting import wait_event
from watchdog.shared import clock


def post(store: Store, msg_id: str, text: str) -> None:
    store.add_messages([IncomingMessage(msg_id, GROUP_A, "27710000001@s.whatsapp.net", text,
                                        clock.now())])


async def woken(event: asyncio.Event) -> bool:
    """Whether `event` is set within 5 s (the event loop reads inotify meanwhile); clears it."""
    result = await wait_event(event, 5.0)
    event.clear()
    return result


def test_one_inotify_instance_wakes_each_subscriber_for_its_own_store_or_wal_and_not_for_files_beside_it(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        (tmp_path / "main").mkdir()
        (tmp_path / "sender").mkdir()
        path, other_path = tmp_path / "main" / "messages.db", tmp_path / "sender" / "messages.db"
        store, other = Store(path), Store(other_path)
        wakes = StoreWakes()
        events = [asyncio.Event() for _ in range(3)]
        schedules = [wakes.subscribe(path, events[0]), wakes.subscribe(path, events[1]),
                     wakes.subscribe(other_path, events[2])]
        try:
            assert all(s.interval == SAFETY_INTERVAL for s in schedules)  # watched, not polled
            assert schedules[0].watch == schedules[1].watch != schedules[2].watch
            # one instance reads its events in order: when a later event woke someone, an earlier one has been read
            post(store, "M1", "DR1734150 installed")  # the commit's write to messages.db-wal
            assert await woken(events[0]) and await woken(events[1]) and not events[2].is_set()
            post(other, "M1", "DR1734151 installed")
            assert await woken(events[2]) and not events[0].is_set() and not events[1].is_set()
            (tmp_path / "main" / "notes.txt").write_text("beside the store")
            post(other, "M2", "DR1734152 installed")
            assert await woken(events[2]) and not events[0].is_set()
            schedules.pop(1).close()  # the other subscriber of the directory leaves: the watch stays
            store.close()  # the last connection checkpoints the WAL and removes it
            assert await woken(events[0])
            store = Store(path)
            post(store, "M2", "DR1734153 installed")  # the WAL is created again: still seen
            assert await woken(events[0]) and not events[1].is_set()
        finally:
            for schedule in schedules:
                schedule.close()
            store.close()
            other.close()
    asyncio.run(scenario())


def test_a_look_due_sooner_than_the_next_settle_look_comes_first(tmp_path: Path) -> None:
    """A webhook retry falling due 50 ms ahead is not kept waiting by the settle look a second away."""
    async def scenario() -> None:
        schedule = StoreWakes().subscribe(tmp_path / "drops.db", asyncio.Event())
        try:
            schedule.wake.set()
            await schedule.next_look()  # woken: the settle looks follow, the last one after 1 s
            for _ in SETTLE_DELAYS[:-1]:
                await schedule.next_look()
            began = time.monotonic()
            await schedule.next_look(0.05)
            assert time.monotonic() - began < SETTLE_DELAYS[-1] / 2
        finally:
            schedule.close()
    asyncio.run(scenario())


def voluntary_switches(pid: int) -> int:
    return psutil.Process(pid).num_ctx_switches().voluntary


@pytest.mark.slow
def test_an_idle_monitor_sleeps_until_the_store_changes_then_records_at_once(procs: Processes,
                                                                              data_dir: Path) -> None:
    store = Store(data_dir / "accounts" / "main" / "messages.db")
    try:
        monitor = start_monitor(procs, "lawley")
        post(store, "M1", "DR1734150 installed")
        wait_until(lambda: query(data_dir, "SELECT drop_number FROM drops") == [("DR1734150",)], timeout=20,
                   message="the first drop recorded (the monitor is following)")
        before = voluntary_switches(monitor.pid)
        time.sleep(2.0)  # a measuring window, not a wait: a 20 ms poll wakes ~100 times in it
        wakes = voluntary_switches(monitor.pid) - before
        assert wakes < 30, f"an idle monitor woke {wakes} times in 2 s"
        for n in range(10):  # each one alone: a wake that comes before its commit is visible must not wait 2 s
            number = f"DR{1734160 + n}"
            post(store, f"N{n}", f"{number} installed")
            (posted, detected), = wait_until(
                lambda: query(data_dir, "SELECT message_time, detected_at FROM drops WHERE drop_number = ?", number),
                timeout=10, message=f"{number} recorded")
            latency = (parse_ts(detected) - parse_ts(posted)).total_seconds()
            assert latency < SAFETY_INTERVAL / 2, f"{number} after {latency:.3f} s: not woken by its commit"
    finally:
        store.close()


def inotify_watches(pid: int) -> list[int]:
    """How many watches each inotify instance of the process holds (its fds and their /proc fdinfo)."""
    counts = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify":
                with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                    counts.append(sum(line.startswith("inotify wd:") for line in info))
        except FileNotFoundError:  # closed meanwhile
            continue
    return counts


def receipt(message_id: str) -> Receipt:
    """A receipt of a message that is no feedback, older than GRACE: read once, never kept waiting."""
    return Receipt((message_id,), GROUP_A, "27710000001@s.whatsapp.net", ReceiptKind.DELIVERED,
                   clock.now() - timedelta(seconds=2 * GRACE))


@pytest.mark.parametrize(("project", "group", "send_account", "watches"),
                         [("lawley", GROUP_A, "sender", 2), ("mohadin", GROUP_B, "main", 1)],
                         ids=["listen-and-send-accounts-differ", "one-account"])
def test_a_monitor_follows_messages_and_receipts_through_one_inotify_instance(
        write_config: Callable[[str], Path], project: str, group: str, send_account: str, watches: int) -> None:
    """Both followers of a monitor share one instance (the per-user limit is 128): a watch per store directory."""
    config_path = write_config(TWO_SESSIONS_CONFIG)
    data_dir = config_path.parent / "data"
    procs = Processes(config_path)
    messages = Store(data_dir / "accounts" / "main" / "messages.db")
    sent = messages if send_account == "main" else Store(data_dir / "accounts" / send_account / "messages.db")
    key = f"receipts:{send_account}"
    cursor = lambda: query(data_dir, "SELECT value FROM store_state WHERE key = ?", key)  # noqa: E731
    try:
        sent.add_receipts([receipt("X1")])
        monitor = start_monitor(procs, project)
        wait_until(lambda: cursor() == [("1",)], timeout=20, message="the receipt follower to read the first receipt")
        assert inotify_watches(monitor.pid) == [watches]  # both followers have subscribed by now
        started = time.monotonic()
        sent.add_receipts([receipt("X2")])
        wait_until(lambda: cursor() == [("2",)], timeout=10, message="the second receipt read")
        assert time.monotonic() - started < SAFETY_INTERVAL / 2, "the receipt follower was not woken by the commit"
        messages.add_messages([IncomingMessage("M1", group, "27710000001@s.whatsapp.net", "DR1734150 installed",
                                               clock.now())])
        (posted, detected), = wait_until(lambda: query(data_dir, "SELECT message_time, detected_at FROM drops"),
                                         timeout=10, message="the drop recorded")
        assert (parse_ts(detected) - parse_ts(posted)).total_seconds() < SAFETY_INTERVAL / 2
        assert inotify_watches(monitor.pid) == [watches]
    finally:
        procs.stop_all()
        messages.close()
        sent.close()


def test_without_inotify_every_follower_polls_and_it_is_logged_once(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    def no_instance_left(*_: object, **__: object) -> None:
        raise OSError(24, "Too many open files")  # what inotify_init1 says past fs.inotify.max_user_instances
    monkeypatch.setattr(store_watch, "INotify", no_instance_left)
    lines: list[str] = []
    sink = logger.add(lines.append, format="{message}")

    async def scenario() -> None:
        wakes = StoreWakes()
        schedules = [wakes.subscribe(tmp_path / "messages.db", asyncio.Event()) for _ in range(2)]
        assert [s.interval for s in schedules] == [POLL_INTERVAL, POLL_INTERVAL]
        started = time.monotonic()
        assert await schedules[0].next_look()  # each look a full one, POLL_INTERVAL apart
        assert time.monotonic() - started < SAFETY_INTERVAL / 2
        for schedule in schedules:
            schedule.close()
    try:
        asyncio.run(scenario())
    finally:
        logger.remove(sink)
    assert [line for line in lines if "inotify" in line] == [
        f"no inotify ([Errno 24] Too many open files): stores polled every {POLL_INTERVAL:g} s\n"]
