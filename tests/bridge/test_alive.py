"""The bridge's heartbeat lives outside the store's directory, with real processes: an idle, connected bridge
wakes no follower of messages.db, and a kill -9 still opens the crash window at its last heartbeat."""
from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from inotify_simple import INotify

from bridge.alive import Beat, alive_path, read_alive
from bridge.main import MAX_TICK
from bridge.schema import parse_ts
from monitors.store_watch import WATCHED
from tests.bridge_support import health, inject, rows, start_bridge, start_sim
from tests.conftest import GROUP_A, Processes, wait_until

SLACK = 0.5  # a loaded machine may run a tick late


def test_the_heartbeat_is_kept_out_of_a_store_directory_that_is_also_the_session_directory(tmp_path: Path) -> None:
    account = tmp_path / "accounts/main"
    assert alive_path(account / "session", account / "messages.db", tmp_path, "bridge:main") == \
        account / "session/bridge.alive"
    assert alive_path(account, account / "messages.db", tmp_path, "bridge:main") == tmp_path / "run/bridge-main.alive"


def _events(inotify: INotify) -> list[str]:
    try:
        return [event.name for event in inotify.read(timeout=0)]
    except BlockingIOError:
        return []


@pytest.mark.slow
def test_an_idle_bridge_writes_nothing_beside_its_store_and_a_kill_9_window_starts_at_its_heartbeat(
        procs: Processes, data_dir: Path) -> None:
    _, sim_url = start_sim(procs, data_dir)
    bridge, url = start_bridge(procs, data_dir)
    store, alive = data_dir / "accounts/main/messages.db", data_dir / "accounts/main/session/bridge.alive"
    # idle: the offline queue replayed (the last write of a start without a window to backfill)
    wait_until(lambda: health(url).get("caught_up") and rows(
        data_dir, "SELECT 1 FROM connection_events WHERE kind = 'offline_sync_done'"), message="caught up")
    inotify = INotify(nonblocking=True)  # what wakes a monitor (monitors/store_watch.py)
    inotify.add_watch(store.parent, WATCHED)
    reader = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    version = reader.execute("PRAGMA data_version").fetchone()[0]
    beats: set[Beat] = set()

    def four_beats() -> bool:
        beat = read_alive(alive)  # None for a read that met a write half way (only a live writer's file)
        if beat is not None:
            beats.add(beat)
        return len(beats) >= 4

    wait_until(four_beats, timeout=10, message="four heartbeats in the file")
    assert _events(inotify) == [] and reader.execute("PRAGMA data_version").fetchone()[0] == version
    assert {beat.pid for beat in beats} == {bridge.pid}

    inject(sim_url, "DR4000001 wakes the followers", GROUP_A)  # the watch does see what a monitor must see
    wait_until(lambda: "messages.db-wal" in _events(inotify), message="the message's commit seen by inotify")
    reader.close()
    inotify.close()

    os.kill(bridge.pid, signal.SIGKILL)
    killed_at = time.time()
    bridge.wait(10)
    last_beat = read_alive(alive).at
    start_bridge(procs, data_dir)
    found = wait_until(lambda: rows(data_dir, "SELECT started_at FROM disconnect_windows WHERE reason = "
                                              "'bridge crash'"), message="the crash window")
    assert found == [(last_beat,)]  # no watchdog here to hand over the exit time: the heartbeat dates it
    assert killed_at - MAX_TICK - SLACK <= parse_ts(last_beat).timestamp() <= killed_at
