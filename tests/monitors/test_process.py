"""The monitor as a real process: waits for the store, sd_notify, SIGTERM, and exactly once across kill -9."""
from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import os
import random
import signal
import socket
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

from bridge.store import Store
from bridge.transport import IncomingMessage
from monitors.drops_store import DropsDB
from monitors.store.sqlite import SqliteBackend
from tests.conftest import GROUP_A, GROUP_B, Processes, wait_until
from tests.monitor_support import query, start_monitor

CONTRACTORS = ["27710000001@s.whatsapp.net", "27710000002@s.whatsapp.net", "27710000003@s.whatsapp.net"]


def post(store: Store, msg_id: str, text: str, chat: str = GROUP_A, sender: str = CONTRACTORS[0]) -> None:
    store.add_messages([IncomingMessage(msg_id, chat, sender, text, datetime.now(timezone.utc))])


class NotifyListener:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(path))
        self.socket.settimeout(10)
        self.received: list[str] = []

    def saw(self, text: str) -> str:
        """Wait for a datagram containing `text`; returns it (recv times out after 10 s)."""
        while True:
            for line in self.received:
                if text in line:
                    return line
            self.received.append(self.socket.recv(4096).decode())

    def close(self) -> None:
        self.socket.close()


@pytest.mark.slow
def test_waits_for_the_store_then_follows_with_sd_notify_and_stops_on_sigterm(procs: Processes, data_dir: Path,
                                                                               tmp_path: Path) -> None:
    listener = NotifyListener(tmp_path / "notify.sock")
    try:
        monitor = start_monitor(procs, "lawley", env={"NOTIFY_SOCKET": str(listener.path),
                                                      "WATCHDOG_USEC": "400000"})
        assert "lawley: waiting for" in listener.saw("STATUS=")
        assert "READY=1" not in "".join(listener.received)
        assert monitor.poll() is None  # no store yet is not a crash
        store = Store(data_dir / "accounts" / "main" / "messages.db")  # the bridge starts late
        listener.saw("READY=1")
        post(store, "M1", "DR1734150 installed")
        post(store, "M2", "chatter")
        wait_until(lambda: query(data_dir, "SELECT drop_number FROM drops") == [("DR1734150",)],
                   message="the drop recorded")
        listener.saw("STATUS=lawley: 1 drops, cursor 2, lag ")
        listener.received.clear()
        listener.saw("WATCHDOG=1")  # every 0.2 s: half of WATCHDOG_USEC
        monitor.send_signal(signal.SIGTERM)
        listener.saw("STOPPING=1")
        assert monitor.wait(timeout=10) == 0
        store.close()
    finally:
        listener.close()


@pytest.mark.slow
def test_exactly_once_across_kill_9_of_two_monitors_sharing_drops_db(procs: Processes, data_dir: Path) -> None:
    """Messages stream in while both monitors are SIGKILLed at random moments and restarted."""
    store = Store(data_dir / "accounts" / "main" / "messages.db")
    rng = random.Random(4)
    posted: dict[str, set[str]] = {GROUP_A: set(), GROUP_B: set()}
    submissions = 0
    done = threading.Event()

    def stream() -> None:
        nonlocal submissions
        writer = Store(store.path)
        for i in range(1500):
            chat = GROUP_A if i % 3 else GROUP_B
            drop = f"DR{1000000 + rng.randrange(600)}"  # repeats: resubmissions
            post(writer, f"M{i}", f"{drop} done" if i % 5 else "chatter", chat, CONTRACTORS[i % 3])
            if i % 5:
                posted[chat].add(drop)
                submissions += 1
            if i % 50 == 0:
                threading.Event().wait(0.01)
        writer.close()
        done.set()

    thread = threading.Thread(target=stream)
    thread.start()
    kills = 0
    monitors = [start_monitor(procs, "lawley"), start_monitor(procs, "mohadin")]
    while not done.is_set() or kills < 6:
        threading.Event().wait(rng.uniform(0.05, 0.4))
        victim = rng.randrange(2)
        os.kill(monitors[victim].pid, signal.SIGKILL)
        monitors[victim].wait()
        kills += 1
        monitors[victim] = start_monitor(procs, ["lawley", "mohadin"][victim])
    thread.join()
    last = store.message_count()
    wait_until(lambda: sorted(query(data_dir, "SELECT project, rowid FROM cursors")) ==
               [("lawley", last), ("mohadin", last)], timeout=20, message="both cursors at the end of the store")
    for project, group in (("lawley", GROUP_A), ("mohadin", GROUP_B)):
        recorded = query(data_dir, f"SELECT drop_number FROM drops WHERE project = '{project}'")
        assert sorted(r[0] for r in recorded) == sorted(posted[group])
        acks = query(data_dir, "SELECT d.drop_number FROM feedback f JOIN drops d ON d.id = f.drop_id "
                               f"WHERE d.project = '{project}'")
        assert sorted(a[0] for a in acks) == sorted(posted[group])
    events = query(data_dir, "SELECT message_id FROM drop_events")
    assert len(events) == len({e[0] for e in events}) == submissions
    assert kills >= 6
    store.close()


def _open_drops_db(path: str, barrier: multiprocessing.synchronize.Barrier) -> None:
    barrier.wait()
    drops = DropsDB(SqliteBackend(Path(path)))  # and every one migrates the new file: once
    drops.record("p", "main", 1, [], None)
    drops.close()


@pytest.mark.slow
def test_six_monitors_creating_drops_db_at_the_same_instant_all_succeed(tmp_path: Path) -> None:
    """Switching a fresh file to WAL ignores the busy timeout; without the retry some rounds failed."""
    context = multiprocessing.get_context("fork")
    for round_ in range(40):
        barrier = context.Barrier(6)
        children = [context.Process(target=_open_drops_db, args=(str(tmp_path / f"drops{round_}.db"), barrier))
                    for _ in range(6)]
        for child in children:
            child.start()
        for child in children:
            child.join(30)
        assert [child.exitcode for child in children] == [0] * 6
