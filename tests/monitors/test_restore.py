"""docs/OPERATIONS.md's restore of messages.db with real processes: nothing the offline queue replays is skipped.

Issue 19 item 1: back up, let the cursors move on, stop, post drops while stopped (WhatsApp queues them for the
session), put the backup back, start. The replay landed in rowids the monitor's cursor had passed, and 300 of
600 such drops were never recorded, without a word.
"""
from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from scripts.benchmarks.fake_clock import LIBFAKETIME, FakeClock
from tests.bridge_support import call, rows, sessions, start_bridge, start_sim
from tests.conftest import BASE_CONFIG, GROUP_A, Processes, wait_until
from tests.monitor_support import all_sent, cli, start_monitor, store_rows
from watchdog.components import Config, load
from watchdog.shared.recovery_log import RecoveryLog

CONTRACTOR = "27710000001@s.whatsapp.net"


@pytest.fixture
def config_path(write_config, drops_backend: str) -> Path:  # noqa: ANN001
    return write_config(BASE_CONFIG + drops_backend)


def inject(sim_url: str, numbers: range) -> None:
    status, body = call("POST", f"{sim_url}/sim/inject", [
        {"chat_jid": GROUP_A, "sender_jid": CONTRACTOR, "text": f"DR{n} done"} for n in numbers])
    assert status == 200, body


def recorded(config: Config) -> list[int]:
    return sorted(int(r[0][2:]) for r in store_rows(config, "SELECT drop_number FROM drops WHERE project = 'lawley'"))


def acknowledged(sim_url: str) -> list[int]:
    """Drop numbers in the acknowledgements the bridge sent (one each, or a duplicate shows)."""
    return sorted(int(s["text"].split()[1][2:]) for s in all_sent(sim_url) if s["recipient"] == GROUP_A)


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0


def restore(store: Path, copy: Path) -> None:
    """docs/OPERATIONS.md: the damaged file and its WAL go, the backup comes back."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store}{suffix}").unlink(missing_ok=True)
    store.write_bytes(copy.read_bytes())


@pytest.mark.slow
def test_a_restored_messages_db_skips_none_of_the_drops_whatsapp_replays(procs: Processes, config_path: Path,
                                                                        data_dir: Path, tmp_path: Path) -> None:
    config = load(config_path)
    _, sim_url = start_sim(procs, data_dir)  # WhatsApp: keeps running, queues for the stopped service
    bridge, _ = start_bridge(procs, data_dir)
    monitor = start_monitor(procs, "lawley")
    before, after, stopped = range(1000000, 1000010), range(2000000, 2000040), range(3000000, 3000120)
    inject(sim_url, before)
    wait_until(lambda: acknowledged(sim_url) == list(before), timeout=20, message="the first drops acknowledged")
    backup = cli(config_path, "backup", str(tmp_path / "backup"))
    assert backup.returncode == 0, backup.stderr
    (copy,) = (tmp_path / "backup").glob("*/data/accounts/main/messages.db")
    inject(sim_url, after)  # the cursor moves on past what the backup holds
    wait_until(lambda: acknowledged(sim_url) == [*before, *after], timeout=20, message="all acknowledged")
    # and the bridge's answers recorded: a send in flight at the stop is posted again after the restart, and the
    # restored file no longer has its idempotency key (a send whose answer the stop cut off, not a re-read)
    wait_until(lambda: store_rows(config, "SELECT COUNT(*) FROM feedback WHERE status = 'sent'")[0][0]
               == len(before) + len(after), timeout=20, message="the answers recorded")
    stop(monitor)
    stop(bridge)
    cursor = store_rows(config, "SELECT rowid FROM cursors WHERE project = 'lawley'")[0][0]
    inject(sim_url, stopped)  # posted while the service is down: WhatsApp's offline queue
    assert sessions(sim_url)["queue_depth"] == len(stopped)
    restore(config.account("main").store, copy)
    restored_end = rows(data_dir, "SELECT MAX(rowid) FROM messages")[0][0]
    assert restored_end < cursor

    bridge, _ = start_bridge(procs, data_dir)  # replays the queue into rowids the cursor has passed
    wait_until(lambda: rows(data_dir, "SELECT COUNT(*) FROM message_meta WHERE source = 'offline'")[0][0]
               == len(stopped), timeout=20, message="the offline queue stored")
    # The replay fills the rowids the cursor has passed and goes on beyond it: the rowid alone cannot tell.
    assert rows(data_dir, "SELECT MIN(m.rowid), MAX(m.rowid) FROM messages m JOIN message_meta mm ON mm.id = m.id "
                          "AND mm.chat_jid = m.chat_jid WHERE mm.source = 'offline'")[0] == (
        restored_end + 1, restored_end + len(stopped))
    assert restored_end + len(stopped) > cursor
    start_monitor(procs, "lawley")
    wait_until(lambda: recorded(config) == [*before, *after, *stopped], timeout=30,
               message="every drop posted while stopped recorded")
    wait_until(lambda: len(acknowledged(sim_url)) >= len(before) + len(after) + len(stopped), timeout=30,
               message="their acknowledgements")
    inject(sim_url, range(4000000, 4000001))  # a barrier: acknowledged in order, after any duplicate
    wait_until(lambda: 4000000 in acknowledged(sim_url), timeout=20, message="the barrier acknowledged")
    assert acknowledged(sim_url) == [*before, *after, *stopped, 4000000]  # each once: none again for re-read ones
    assert store_rows(config, "SELECT COUNT(*) FROM drop_events") == [(len(before) + len(after) + len(stopped) + 1,)]
    (line,) = [r for r in RecoveryLog(config.watchdog.recovery_log).read() if r["event"] == "reread"]
    assert (line["component"], line["cursor"], line["rowid"]) == ("monitor:lawley", cursor, restored_end)


@pytest.mark.slow
@pytest.mark.skipif(not LIBFAKETIME.exists(), reason="libfaketime is not installed (Debian: faketime)")
@pytest.mark.parametrize("whatsapp_stepped", [True, False], ids=["whatsapp-too", "host-only"])
def test_a_drop_acknowledged_after_the_backup_and_a_clock_step_back_comes_back_from_history(
        procs: Processes, config_path: Path, data_dir: Path, tmp_path: Path, whatsapp_stepped: bool) -> None:
    """The 10-minute chaos round's lost drop (DR7000179): the wall clock of every process, WhatsApp's (the
    simulator's) too, stepped an hour back after the backup; a drop the bridge stored, and so acknowledged to
    WhatsApp, after the monitor stopped is in neither the restored file nor the offline queue. Only the restored
    store's window, asked of history, brings it back; the simulator answered that from a bisection over its
    times in arrival order, which the step had put out of order: nothing, and the drop was never recorded.
    host-only: as in production, WhatsApp's clock is right and the host's ran an hour ahead until NTP corrected
    it; the restored file's window starts at its heartbeat moved onto the corrected clock (by the boot's clock),
    so history is asked for the hour the drop really came in."""
    config = load(config_path)
    fake = FakeClock(tmp_path)
    fake.set(0 if whatsapp_stepped else 3600)
    _, sim_url = start_sim(procs, data_dir, env=fake.env() if whatsapp_stepped else None)
    bridge, _ = start_bridge(procs, data_dir, env=fake.env())
    monitor = start_monitor(procs, "lawley", env=fake.env())
    before, after, unread = range(1000000, 1000010), range(2000000, 2000002), range(3000000, 3000001)
    inject(sim_url, before)
    wait_until(lambda: acknowledged(sim_url) == list(before), timeout=20, message="the first drops acknowledged")
    backup = cli(config_path, "backup", str(tmp_path / "backup"))
    assert backup.returncode == 0, backup.stderr
    (copy,) = (tmp_path / "backup").glob("*/data/accounts/main/messages.db")
    fake.set(fake.offset - 3600)  # NTP corrects the host's clock by an hour
    inject(sim_url, after)
    wait_until(lambda: acknowledged(sim_url) == [*before, *after], timeout=20, message="all acknowledged")
    wait_until(lambda: store_rows(config, "SELECT COUNT(*) FROM feedback WHERE status = 'sent'")[0][0]
               == len(before) + len(after), timeout=20, message="the answers recorded")
    stop(monitor)
    inject(sim_url, unread)  # the bridge stores it (WhatsApp delivered it: not queued again); no monitor reads it
    wait_until(lambda: rows(data_dir, "SELECT COUNT(*) FROM messages WHERE content LIKE 'DR3000000%'") == [(1,)],
               timeout=20, message="the unread drop stored")
    stop(bridge)
    assert sessions(sim_url)["queue_depth"] == 0  # only WhatsApp's history has it now
    restore(config.account("main").store, copy)

    start_bridge(procs, data_dir, env=fake.env())
    start_monitor(procs, "lawley", env=fake.env())
    wait_until(lambda: recorded(config) == [*before, *after, *unread], timeout=30,
               message="the drop acknowledged after the backup recorded")
    inject(sim_url, range(4000000, 4000001))  # a barrier: acknowledged in order, after any duplicate
    wait_until(lambda: 4000000 in acknowledged(sim_url), timeout=20, message="the barrier acknowledged")
    assert acknowledged(sim_url) == [*before, *after, *unread, 4000000]  # none again for the drops read again
