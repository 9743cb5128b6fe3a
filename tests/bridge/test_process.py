"""The bridge as a real process against the real simulator: crashes, the session lock, stream
replaced, disconnect windows and backfill, sd_notify."""
from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.alive import read_alive
from tests.bridge_support import (call, consume_queue_elsewhere, health, inject, rows, sessions, start_bridge,
                                  start_sim, streaming)
from tests.conftest import BASE_CONFIG, GROUP_A, GROUP_B, GROUP_C, Processes, wait_until
from watchdog.shared.exitcodes import EXIT_SESSION_HELD
from watchdog.shared.recovery_log import RecoveryLog


def windows(data_dir: Path) -> list[tuple]:
    return rows(data_dir, "SELECT started_at, ended_at, reason, backfill_status, recovered FROM disconnect_windows "
                          "ORDER BY id")


@pytest.mark.slow
def test_kill_9_while_streaming_loses_nothing_and_stores_each_message_once(procs: Processes, data_dir: Path) -> None:
    _, sim = start_sim(procs, data_dir)
    bridge, _ = start_bridge(procs, data_dir)
    total = 600
    with streaming(sim, total, first_drop=2000000) as injected:
        wait_until(lambda: rows(data_dir, "SELECT COUNT(*) FROM messages")[0][0] >= total // 4, timeout=20,
                   message="the bridge to store a quarter of the stream")
        alive_at = wait_until(lambda: read_alive(data_dir / "accounts/main/session/bridge.alive"),
                              message="a readable heartbeat").at  # None only if the read met a write half way
        os.kill(bridge.pid, signal.SIGKILL)
        assert bridge.wait(timeout=10) == -signal.SIGKILL
        assert len(injected) < total, "the stream ended before the kill; nothing was tested"
        start_bridge(procs, data_dir)
    wait_until(lambda: rows(data_dir, "SELECT COUNT(*) FROM messages")[0][0] >= total, timeout=20,
               message=f"all {total} messages stored")
    stored = rows(data_dir, "SELECT id FROM messages")
    assert sorted(i for (i,) in stored) == sorted(injected)  # every message, each exactly once
    assert rows(data_dir, "SELECT COUNT(*), COUNT(DISTINCT source) > 0 FROM message_meta")[0] == (total, 1)
    # whatsapp-mcp's invariants: named chats, last_message_time = the newest message of the chat.
    assert rows(data_dir, "SELECT c.jid, c.name, c.last_message_time = MAX(m.timestamp) FROM chats c "
                          "JOIN messages m ON m.chat_jid = c.jid GROUP BY c.jid ORDER BY c.jid") == [
        (GROUP_A, "Lawley Fibre", 1), (GROUP_B, "Mohadin Fibre", 1)]
    wait_until(lambda: sessions(sim)["queue_depth"] == 0, message="every message acknowledged")
    # The crash is a disconnect window from the last heartbeat before the kill to the reconnect, backfilled.
    wait_until(lambda: windows(data_dir) and windows(data_dir)[0][3] == "done", message="the crash window backfilled")
    (started, ended, reason, status, recovered), = windows(data_dir)
    assert reason == "bridge crash" and alive_at <= started < ended
    assert recovered == 0  # the offline queue delivered everything; nothing was missing


@pytest.mark.slow
def test_a_second_bridge_on_the_same_session_is_refused(procs: Processes, data_dir: Path) -> None:
    _, sim = start_sim(procs, data_dir)
    first, url = start_bridge(procs, data_dir)
    second = procs.start("bridge", "--account", "main")
    _, err = second.communicate(timeout=15)
    assert second.returncode == EXIT_SESSION_HELD
    lock = data_dir / "accounts/main/session/session.lock"
    assert f"session {lock} is held by pid {first.pid}" in err.decode()
    assert sessions(sim)["connections"] == 1  # the refused one never opened a socket
    assert health(url)["state"] == "connected"


@pytest.mark.slow
def test_stream_replaced_is_recorded_and_never_answered_by_reconnecting(procs: Processes, data_dir: Path) -> None:
    _, sim = start_sim(procs, data_dir)
    bridge, url = start_bridge(procs, data_dir)
    inject(sim, "DR3000001", GROUP_A)
    consume_queue_elsewhere(data_dir, expected=0)  # another client takes over the session, then leaves
    answer = wait_until(lambda: (lambda h: h if h["state"] == "stream_replaced" else None)(health(url)),
                        message="health to report stream_replaced")
    assert answer["status"] == "unavailable" and "stream replaced" in answer["reason"]
    assert answer["open_window"]["reason"].startswith("stream replaced")
    assert call("GET", f"{url}/api/health")[0] == 503
    kinds = [k for (k,) in rows(data_dir, "SELECT kind FROM connection_events ORDER BY id")]
    assert kinds[-1] == "stream_replaced"
    # It keeps serving (the watchdog must see why) and queues sends, but never takes the session back.
    status, body = call("POST", f"{url}/api/send", {"recipient": GROUP_A, "message": "still here"})
    assert (status, body["queued"]) == (202, True)
    assert bridge.poll() is None
    assert (sessions(sim)["connections"], sessions(sim)["stream_replaced"], sessions(sim)["dead_replaced"]) == (2, 1, 0)


@pytest.mark.slow
def test_backfill_recovers_what_the_offline_queue_did_not_deliver(procs: Processes, data_dir: Path) -> None:
    _, sim = start_sim(procs, data_dir)
    bridge, _ = start_bridge(procs, data_dir)
    bridge.send_signal(signal.SIGTERM)
    assert bridge.wait(timeout=10) == 0
    (started, ended, reason, status, _), = windows(data_dir)
    assert (ended, reason, status) == (None, "bridge stopped", "pending")
    missed = [inject(sim, f"DR40000{n}", GROUP_A if n % 2 else GROUP_B)["id"] for n in range(6)]
    inject(sim, "DR4999999", GROUP_C)  # not a followed group: not backfilled
    assert len(consume_queue_elsewhere(data_dir, expected=7)) == 7
    wait_until(lambda: sessions(sim)["queue_depth"] == 0, message="the queue consumed elsewhere")

    start_bridge(procs, data_dir)
    wait_until(lambda: windows(data_dir)[0][3] == "done", message="the window backfilled")
    (started2, ended, reason, status, recovered), = windows(data_dir)
    assert (started2, reason, recovered) == (started, "bridge stopped", 6) and ended > started
    assert sorted(rows(data_dir, "SELECT m.id, mm.source FROM messages m JOIN message_meta mm USING (id, chat_jid)")) \
        == sorted((i, "history") for i in missed)
    events = [(r["event"], r.get("message", "")) for r in RecoveryLog(data_dir / "recoveries.jsonl").read()
              if r["component"] == "bridge:main"]
    assert [e for e, _ in events] == ["reconnect", "backfill"]
    assert "6 recovered from history" in events[1][1] and "bridge stopped" in events[1][1]


@pytest.mark.slow
def test_a_crash_while_disconnected_keeps_one_window_from_the_outage_start(procs: Processes, data_dir: Path) -> None:
    sim_proc, _ = start_sim(procs, data_dir)
    bridge, url = start_bridge(procs, data_dir)
    sim_proc.terminate()
    assert sim_proc.wait(timeout=10) == 0
    wait_until(lambda: health(url)["state"] == "disconnected", message="the bridge to see the outage")
    os.kill(bridge.pid, signal.SIGKILL)
    bridge.wait(timeout=10)
    start_sim(procs, data_dir, old_pid=sim_proc.pid)
    start_bridge(procs, data_dir)
    wait_until(lambda: windows(data_dir)[0][3] == "done", message="the window backfilled")
    (_, ended, reason, _, _), = windows(data_dir)
    assert ended is not None and reason != "bridge crash"  # the outage began before the crash
    events = [r["event"] for r in RecoveryLog(data_dir / "recoveries.jsonl").read()]
    assert events == ["disconnect", "reconnect", "backfill"]


@pytest.mark.slow
def test_sd_notify_ready_watchdog_while_disconnected_status_and_stopping(procs: Processes, data_dir: Path,
                                                                        tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify.sock"))
    listener.settimeout(10)
    received: list[str] = []

    def saw(text: str) -> bool:
        while not any(text in line for line in received):
            received.append(listener.recv(4096).decode())
        return True

    sim_proc, _ = start_sim(procs, data_dir)
    bridge, url = start_bridge(procs, data_dir, env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
                                                     "WATCHDOG_USEC": "400000"})
    try:
        assert saw("READY=1")
        assert any(line.startswith("READY=1\nSTATUS=connected") for line in received)
        sim_proc.terminate()
        wait_until(lambda: health(url)["state"] == "disconnected", message="the outage")
        received.clear()
        assert saw("STATUS=disconnected")
        received.clear()
        assert saw("WATCHDOG=1")  # still alive while WhatsApp is away: no restart loop
        bridge.send_signal(signal.SIGTERM)
        assert saw("STOPPING=1")
        assert bridge.wait(timeout=10) == 0
    finally:
        listener.close()


@pytest.mark.slow
def test_a_clean_stop_is_a_window_the_next_start_closes(procs: Processes, data_dir: Path) -> None:
    start_sim(procs, data_dir)
    bridge, _ = start_bridge(procs, data_dir)
    bridge.send_signal(signal.SIGINT)
    assert bridge.wait(timeout=10) == 0
    assert rows(data_dir, "SELECT key, value FROM bridge_state WHERE key = 'clean_stop'") == [("clean_stop", "1")]
    start_bridge(procs, data_dir)
    wait_until(lambda: windows(data_dir)[0][1] is not None, message="the stop window closed")
    assert [w[2] for w in windows(data_dir)] == ["bridge stopped"]


@pytest.mark.slow
def test_health_without_a_simulator_reports_the_outage(procs: Processes, data_dir: Path) -> None:
    bridge, url = start_bridge(procs, data_dir, connected=False)
    answer = wait_until(lambda: (lambda h: h if h["state"] == "disconnected" else None)(health(url)),
                        message="connect_failed reported as disconnected")
    assert answer["status"] == "unavailable" and "simulator" in answer["reason"]
    assert answer["connected"] is False and answer["store_writable"] is True and answer["outbox_depth"] == 0
    assert answer["account"] == "main" and answer["pid"] == bridge.pid and 0 <= answer["loop_lag_ms"] < 1000
    assert "simulator" in answer["open_window"]["reason"]  # no connection since the start: a window


@pytest.mark.slow
def test_logged_out_is_reported_and_never_retried(procs: Processes, data_dir: Path,
                                                  write_config: Callable[[str], Path]) -> None:
    start_sim(procs, data_dir)
    # The same data directory, but a number the (simulated) WhatsApp does not know: it logs us out.
    unpaired = Processes(write_config(BASE_CONFIG.replace('phone = "27710000000"', 'phone = "27719999999"'),
                                      name="unpaired.toml"))
    try:
        bridge, url = start_bridge(unpaired, data_dir, connected=False)
        answer = wait_until(lambda: (lambda h: h if h["state"] == "logged_out" else None)(health(url)),
                            message="health to report logged_out")
        assert answer["status"] == "unavailable" and "unknown session" in answer["reason"]
        assert answer["open_window"]["reason"].startswith("logged out")
        assert [k for (k,) in rows(data_dir, "SELECT kind FROM connection_events")] == ["logged_out"]
        assert bridge.poll() is None  # still serving health for the operator
    finally:
        unpaired.stop_all()
