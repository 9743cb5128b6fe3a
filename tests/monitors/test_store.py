"""The monitor against a real bridge store and a real drops store: every test on drops.db and on PostgreSQL."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bridge.alive import AliveFile
from bridge.schema import format_ts
from bridge.store import Store
from bridge.transport import IncomingMessage, Source
from bridge.windows import Windows
from monitors.drops_store import (FEEDBACK_PENDING, FEEDBACK_QUEUED, FEEDBACK_SENT, Submission,
                                  check_feedback_transition, open_drops_store)
from monitors.feedback import idempotency_key
from monitors.follow import StoreFollower
from monitors.main import MonitorProcess
from monitors.project import ProjectMonitor
from tests.bridge.test_windows import FixedHistory
from tests.conftest import BASE_CONFIG, GROUP_A, GROUP_B, MESSAGE_ACK
from tests.monitor_support import store_rows as rows
from tests.monitor_support import store_run
from watchdog.components import Config, load
from watchdog.shared.recovery_log import RecoveryLog

CONTRACTOR = "27710000001@s.whatsapp.net"
T0 = datetime(2026, 11, 24, 8, 0, 0, tzinfo=timezone.utc)


@pytest.fixture
def config(write_config, drops_backend: str) -> Config:  # noqa: ANN001
    return load(write_config(BASE_CONFIG + drops_backend))


@pytest.fixture
def store(config: Config) -> Iterator[Store]:
    store = Store(config.account("main").store)
    yield store
    store.close()


def post(store: Store, msg_id: str, text: str, chat: str = GROUP_A, sender: str = CONTRACTOR,
         source: Source = Source.LIVE, at: datetime = T0) -> None:
    store.add_messages([IncomingMessage(msg_id, chat, sender, text, at, source, chat_name="Lawley Fibre")])


def catch_up(config: Config, project: str = "lawley") -> ProjectMonitor:
    """A fresh monitor (as after a restart) that catches up once."""
    (monitor,) = MonitorProcess(config, [config.project(project)]).monitors
    follower = StoreFollower(config.account("main").store)
    asyncio.run(monitor.catch_up(follower))
    follower.close()
    monitor.drops.close()
    return monitor


def test_each_drop_once_a_resubmission_is_an_event_and_a_replay_adds_nothing(config: Config, store: Store) -> None:
    post(store, "M1", "DR1734150 installed")
    post(store, "M2", "DR471349", chat=GROUP_B)  # mohadin's group
    post(store, "M3", "dr1734150 again, fixed", sender="27710000002@s.whatsapp.net", at=T0 + timedelta(minutes=5))
    catch_up(config)
    catch_up(config)
    assert rows(config, "SELECT project, drop_number, group_jid, group_name, submitted_by, message_id, message_time "
                        "FROM drops") == [
        ("lawley", "DR1734150", GROUP_A, "Lawley Fibre", CONTRACTOR, "M1", format_ts(T0))]
    assert rows(config, "SELECT kind, submitted_by, message_id FROM drop_events ORDER BY id") == [
        ("submitted", CONTRACTOR, "M1"), ("resubmitted", "27710000002@s.whatsapp.net", "M3")]
    assert rows(config, "SELECT project, rowid FROM cursors") == [("lawley", 3)]
    # A cursor lost (e.g. drops.db restored from an older copy) replays messages: still nothing twice.
    store_run(config, "UPDATE cursors SET rowid = 0")
    catch_up(config)
    assert rows(config, "SELECT COUNT(*) FROM drops") == [(1,)]
    assert rows(config, "SELECT COUNT(*) FROM drop_events") == [(2,)]
    assert rows(config, "SELECT COUNT(*) FROM feedback") == [(1,)]


@pytest.mark.slow
def test_a_monitor_that_was_down_catches_up_from_its_cursor(config: Config, store: Store) -> None:
    post(store, "M1", "DR1000001")
    first = catch_up(config)
    assert first.cursor == 1
    for i in range(2, 2500):  # more than one batch while it was down
        post(store, f"M{i}", f"DR{1000000 + i}" if i % 2 else "chatter")
    second = catch_up(config)
    assert second.cursor == 2499
    assert rows(config, "SELECT COUNT(*) FROM drops") == [(1 + 1249,)]


def test_cursor_and_drops_commit_together(config: Config, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure half way through a batch leaves neither drops nor a moved cursor (then it is redone)."""
    post(store, "M1", "DR1000001")
    post(store, "M2", "DR1000002")
    calls = []

    def ack_that_dies(project: object, sub: Submission) -> None:
        calls.append(sub.drop_number)
        if len(calls) == 2:
            raise RuntimeError("killed mid-batch")
        return real_ack(project, sub)

    import monitors.project
    real_ack = monitors.project.ack_for
    monkeypatch.setattr(monitors.project, "ack_for", ack_that_dies)
    with pytest.raises(RuntimeError):
        catch_up(config)
    assert rows(config, "SELECT COUNT(*) FROM drops") == [(0,)]
    assert rows(config, "SELECT COUNT(*) FROM cursors") == [(0,)]
    monkeypatch.setattr(monitors.project, "ack_for", real_ack)
    assert catch_up(config).cursor == 2
    assert rows(config, "SELECT drop_number FROM drops ORDER BY id") == [("DR1000001",), ("DR1000002",)]


def test_new_drops_get_one_pending_acknowledgement_with_the_mention(config: Config, store: Store) -> None:
    post(store, "M1", "DR1734150")
    post(store, "M2", "DR1734150 resubmitted")
    catch_up(config)
    text = "@27710000001 DR1734150 received, thank you"
    assert rows(config, "SELECT kind, recipient, text, mentions, idempotency_key, status FROM feedback") == [
        ("ack", GROUP_A, text, f'["{CONTRACTOR}"]', idempotency_key("lawley", "DR1734150", "M1", text),
         FEEDBACK_PENDING)]
    assert rows(config, "SELECT feedback_status, feedback_sent_at FROM drops") == [(FEEDBACK_PENDING, None)]


def test_no_acknowledgement_when_auto_ack_is_off(write_config, drops_backend: str,  # noqa: ANN001
                                                 store: Store) -> None:
    config = load(write_config(BASE_CONFIG.replace(MESSAGE_ACK, 'feedback = { auto_ack = false }', 1)
                               + drops_backend))
    post(store, "M1", "DR1734150")
    catch_up(config)
    assert rows(config, "SELECT feedback_status FROM drops") == [("none",)]
    assert rows(config, "SELECT COUNT(*) FROM feedback") == [(0,)]


def test_feedback_status_transitions_and_sent_at_only_when_accepted(config: Config, store: Store) -> None:
    post(store, "M1", "DR1734150")
    catch_up(config)
    drops = open_drops_store(config)
    (feedback,) = drops.pending_feedback("lawley")
    retried = drops.finish_feedback(feedback, FEEDBACK_PENDING, "bridge down")
    assert (retried.attempts, retried.sent_at, drops.drop("lawley", "DR1734150").feedback_sent_at) == (1, None, None)
    sent = drops.finish_feedback(retried, FEEDBACK_SENT, bridge_message_id="3EB0AA")
    drop = drops.drop("lawley", "DR1734150")
    assert (drop.feedback_status, drop.feedback_sent_at) == (FEEDBACK_SENT, sent.sent_at)
    assert sent.sent_at is not None
    # The monitor and `wa-watchdog feedback` may both post a pending feedback: the first answer stands.
    assert drops.finish_feedback(retried, FEEDBACK_PENDING, "late timeout") == sent
    (again,) = [f for f in drops.feedback_of(drop) if f.id == sent.id]
    assert again == sent
    drops.close()


def test_feedback_status_only_leaves_pending_for_a_bridge_answer() -> None:
    check_feedback_transition(FEEDBACK_PENDING, FEEDBACK_QUEUED)
    with pytest.raises(ValueError, match="from 'pending' to 'none'"):
        check_feedback_transition(FEEDBACK_PENDING, "none")
    with pytest.raises(ValueError, match="from 'sent' to 'pending'"):
        check_feedback_transition(FEEDBACK_SENT, FEEDBACK_PENDING)


def test_backfilled_from_the_source_and_from_a_window(config: Config, store: Store) -> None:
    post(store, "M1", "DR1000001", at=T0)  # live, before the outage
    post(store, "M2", "DR1000002", at=T0 + timedelta(minutes=1))  # live; the window starts before it (crash)
    store.start_window(format_ts(T0 + timedelta(seconds=30)), "bridge crash")
    post(store, "M3", "DR1000003", source=Source.OFFLINE, at=T0 + timedelta(minutes=2))
    post(store, "M4", "DR1000004", source=Source.HISTORY, at=T0 + timedelta(minutes=3))
    store.end_window(format_ts(T0 + timedelta(minutes=3, seconds=30)))
    post(store, "M5", "DR1000005", at=T0 + timedelta(minutes=4))  # live, after the window
    catch_up(config)
    assert dict(rows(config, "SELECT drop_number, backfilled FROM drops")) == {
        "DR1000001": 0, "DR1000002": 1, "DR1000003": 1, "DR1000004": 1, "DR1000005": 0}


def report_lines(config: Config) -> list[dict]:
    return [r for r in RecoveryLog(config.watchdog.recovery_log).read() if r["event"] == "backfill"]


def test_a_backfilled_window_is_reported_once_per_project(config: Config, store: Store) -> None:
    post(store, "M0", "DR1000000", at=T0)  # before the window
    post(store, "M1", "DR9996543", at=T0 + timedelta(minutes=3, seconds=20))  # recorded live, then the crash
    window = store.start_window(format_ts(T0 + timedelta(minutes=3, seconds=10)), "bridge crash")
    post(store, "M2", "DR9996544 on pole 7", source=Source.OFFLINE, at=T0 + timedelta(minutes=4))
    post(store, "M3", "nothing to see", source=Source.HISTORY, at=T0 + timedelta(minutes=5))
    post(store, "M4", "DR471349", chat=GROUP_B, source=Source.HISTORY, at=T0 + timedelta(minutes=5))
    store.end_window(format_ts(T0 + timedelta(minutes=6, seconds=40)))
    catch_up(config)
    assert report_lines(config) == []  # the bridge has not backfilled it yet
    store.finish_backfill(window.id, "done", recovered=2)
    catch_up(config)
    catch_up(config)  # and after a restart: still one line
    catch_up(config, "mohadin")
    lines = {r["component"]: r for r in report_lines(config)}
    assert len(report_lines(config)) == 2
    assert lines["monitor:lawley"]["message"] == (  # M3 from history; M1 and M2 delivered late
        "window 08:03:10-08:06:40 (bridge crash): in its groups 1 recovered from history, 2 delivered late; "
        "DR9996543, DR9996544 backfilled")
    assert (lines["monitor:lawley"]["window_id"], lines["monitor:lawley"]["drops"]) == (window.id,
                                                                                        ["DR9996543", "DR9996544"])
    assert lines["monitor:mohadin"]["message"] == (
        "window 08:03:10-08:06:40 (bridge crash): in its groups 1 recovered from history, 0 delivered late; "
        "DR471349 backfilled")
    # DR9996543 was recorded live before the window was known: the report marks it backfilled.
    assert dict(rows(config, "SELECT drop_number, backfilled FROM drops WHERE project = 'lawley'")) == {
        "DR1000000": 0, "DR9996543": 1, "DR9996544": 1}


def test_the_bridge_and_the_monitors_give_one_account_of_a_window(config: Config, store: Store, tmp_path: Path) -> None:
    """Issue 19 item 11: the bridge said "recovered 0 ... 13 delivered late" where a monitor said "6 messages
    recovered" of the same window. Now the projects' counts are shares of the bridge's, in the same words."""
    window = store.start_window(format_ts(T0), "bridge crash")
    for n in range(4):
        post(store, f"A{n}", "on site", source=Source.OFFLINE, at=T0 + timedelta(seconds=10 + n))
    for n in range(2):
        post(store, f"B{n}", "on site", chat=GROUP_B, source=Source.OFFLINE, at=T0 + timedelta(seconds=20 + n))
    store.end_window(format_ts(T0 + timedelta(minutes=1)))
    history = [IncomingMessage("H1", GROUP_A, CONTRACTOR, "DR5000001 missed", T0 + timedelta(seconds=30),
                               Source.HISTORY, chat_name="Lawley Fibre")]
    log = RecoveryLog(config.watchdog.recovery_log)
    windows = Windows(store, AliveFile(tmp_path / "bridge.alive"), log, "bridge:main", FixedHistory(history),
                      config.account("main").follow_groups)
    asyncio.run(windows.backfill())
    catch_up(config)
    catch_up(config, "mohadin")
    lines = {r["component"]: r for r in report_lines(config) if r.get("window_id") == window.id}
    bridge, lawley, mohadin = lines["bridge:main"], lines["monitor:lawley"], lines["monitor:mohadin"]
    assert (bridge["recovered"], bridge["late"]) == (1, 6)
    assert (lawley["recovered"], lawley["late"], mohadin["recovered"], mohadin["late"]) == (1, 4, 0, 2)
    assert "1 recovered from history, 6 delivered late (history asked for" in bridge["message"]
    assert "in its groups 1 recovered from history, 4 delivered late; DR5000001 backfilled" in lawley["message"]
    assert "in its groups 0 recovered from history, 2 delivered late; no drops" in mohadin["message"]


def test_a_report_interrupted_by_a_crash_is_written_exactly_once(config: Config, store: Store) -> None:
    window = store.start_window(format_ts(T0), "server disconnect")
    store.end_window(format_ts(T0 + timedelta(seconds=5)))
    store.finish_backfill(window.id, "unsupported")
    drops = open_drops_store(config)
    drops.claim_window("lawley", "main", window.id, format_ts(T0), format_ts(T0 + timedelta(seconds=5)))
    drops.close()  # died before writing the line
    catch_up(config)
    assert [r["message"] for r in report_lines(config)] == [
        "window 08:00:00-08:00:05 (server disconnect): backfill unsupported; in its groups 0 recovered from history, "
        "0 delivered late; no drops"]
    store_run(config, "UPDATE reported_windows SET reported_at = NULL")  # died after the line, before marking it
    catch_up(config)
    assert len(report_lines(config)) == 1
    assert rows(config, "SELECT reported_at IS NOT NULL FROM reported_windows") == [(1,)]


def test_a_window_of_a_restored_store_that_reuses_a_reported_id_is_reported(config: Config, store: Store) -> None:
    """messages.db restored from a backup numbers its windows again: the id of a window already reported comes
    back for another window (its own start); that one is reported and its drops marked, not taken as done."""
    window = store.start_window(format_ts(T0), "server disconnect")
    store.end_window(format_ts(T0 + timedelta(seconds=5)))
    store.finish_backfill(window.id, "unsupported")
    catch_up(config)
    store.conn.execute("DELETE FROM disconnect_windows")  # the restored file: it never had that window
    store.conn.execute("DELETE FROM sqlite_sequence WHERE name = 'disconnect_windows'")
    store.conn.commit()
    post(store, "M1", "DR1000001", at=T0 + timedelta(minutes=10, seconds=2))  # posted while the service was down
    again = store.start_window(format_ts(T0 + timedelta(minutes=10)), "bridge crash")
    store.end_window(format_ts(T0 + timedelta(minutes=10, seconds=5)))
    store.finish_backfill(again.id, "unsupported")
    assert again.id == window.id
    catch_up(config)
    assert [r["message"].split(" (")[0] for r in report_lines(config)] == ["window 08:00:00-08:00:05",
                                                                          "window 08:10:00-08:10:05"]
    assert rows(config, "SELECT drop_number, backfilled FROM drops") == [("DR1000001", 1)]
    assert rows(config, "SELECT window_started_at FROM reported_windows") == [(format_ts(T0 + timedelta(minutes=10)),)]


@pytest.mark.slow
def test_a_replaced_store_is_followed_from_its_start(config: Config, store: Store) -> None:
    post(store, "M1", "DR1000001")
    post(store, "M2", "DR1000002")
    catch_up(config)
    store.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store.path}{suffix}").unlink(missing_ok=True)
    fresh = Store(store.path)  # e.g. restored from nothing: rowids start again at 1
    post(fresh, "M3", "DR1000003")
    monitor = MonitorProcess(config, [config.project("lawley")])

    async def start_and_stop() -> int:
        asyncio.get_running_loop().call_later(0.5, monitor.entry.request_stop)
        return await monitor.run()
    assert asyncio.run(start_and_stop()) == 0
    fresh.close()
    assert rows(config, "SELECT drop_number FROM drops ORDER BY id") == [("DR1000001",), ("DR1000002",),
                                                                          ("DR1000003",)]
    assert rows(config, "SELECT rowid FROM cursors") == [(1,)]


def test_one_drop_in_three_spellings_is_one_row_and_one_acknowledgement(config: Config, store: Store) -> None:
    post(store, "M1", "DR7123456")
    post(store, "M2", "DR\uff17\uff11\uff12\uff13\uff14\uff15\uff16", sender="27710000002@s.whatsapp.net")
    post(store, "M3", "DR\u0667\u0661\u0662\u0663\u0664\u0665\u0666", sender="27710000003@s.whatsapp.net")
    catch_up(config)
    assert rows(config, "SELECT drop_number, message_id FROM drops") == [("DR7123456", "M1")]
    assert rows(config, "SELECT kind, message_id FROM drop_events ORDER BY id") == [
        ("submitted", "M1"), ("resubmitted", "M2"), ("resubmitted", "M3")]
    assert rows(config, "SELECT text FROM feedback") == [("@27710000001 DR7123456 received, thank you",)]
