"""Exactly once for whatsapp-mcp's client, which treats anything but 200 as failure and retries without an
Idempotency-Key: while the bridge reconnects the request waits for delivery and answers 200; a retry of a
request that was answered 202 (or not at all: the bridge was killed) is the same send, never a second one; so is
a retry with an Idempotency-Key after messages.db was put back from a backup that predates the first send."""
from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.bridge_support import call, health, sent, start_bridge, start_sim
from tests.conftest import BASE_CONFIG, GROUP_A, Processes, wait_until
from tests.monitor_support import cli

SEND = {"group_jid": GROUP_A, "recipient_jid": "27710000001@s.whatsapp.net", "message": "DR1734150 needs a photo"}


@pytest.mark.slow
def test_a_request_during_a_reconnect_waits_and_is_answered_200(procs: Processes, data_dir: Path) -> None:
    sim_proc, _ = start_sim(procs, data_dir)
    _, url = start_bridge(procs, data_dir)
    sim_proc.terminate()
    wait_until(lambda: health(url)["state"] == "disconnected", message="the bridge to see the outage")
    answers: list[tuple[int, object]] = []
    client = threading.Thread(target=lambda: answers.append(call("POST", f"{url}/send-message", SEND, timeout=30)))
    client.start()  # whatsapp-mcp's requests.post(url, json=...): no Idempotency-Key
    wait_until(lambda: health(url)["outbox_depth"] == 1, message="the request queued")
    _, sim = start_sim(procs, data_dir, old_pid=sim_proc.pid)  # WhatsApp is back while the client still waits
    client.join(timeout=30)
    ((status, body),) = answers
    assert status == 200 and body["success"] is True, body
    assert [(s["id"], s["text"]) for s in sent(sim)] == [(body["id"], "@27710000001 DR1734150 needs a photo")]


@pytest.mark.slow
def test_retries_without_a_key_are_the_same_send_across_a_bridge_kill(procs: Processes, data_dir: Path,
                                                                       write_config: Callable[[str], Path]) -> None:
    write_config(BASE_CONFIG.replace("watchdog_sec = 3.0", "watchdog_sec = 3.0\nsend_wait_s = 0.5", 1))
    sim_proc, _ = start_sim(procs, data_dir)
    bridge, url = start_bridge(procs, data_dir)
    sim_proc.terminate()
    wait_until(lambda: health(url)["state"] == "disconnected", message="the bridge to see the outage")
    status, first = call("POST", f"{url}/send-message", SEND)
    assert status == 202  # the client reports a failure and retries...
    status, retry = call("POST", f"{url}/send-message", SEND)
    assert (status, retry["id"]) == (202, first["id"])  # ...and it is the same send
    os.kill(bridge.pid, signal.SIGKILL)  # the bridge dies before WhatsApp is back; the client retries again
    bridge.wait(timeout=10)
    _, sim = start_sim(procs, data_dir, old_pid=sim_proc.pid)
    _, url = start_bridge(procs, data_dir)
    status, again = call("POST", f"{url}/send-message", SEND)
    assert (status, again["id"]) == (200, first["id"])
    wait_until(lambda: health(url)["outbox_depth"] == 0, message="the outbox drained")
    assert [s["id"] for s in sent(sim)] == [first["id"]]  # exactly once
    different = dict(SEND, message="DR1734151 needs a photo")
    status, other = call("POST", f"{url}/send-message", different)
    assert status == 200 and other["id"] != first["id"] and len(sent(sim)) == 2  # a new message is a new send


@pytest.mark.slow
def test_a_keyed_retry_after_a_restore_from_a_backup_is_the_same_whatsapp_message(procs: Processes, data_dir: Path,
                                                                                  tmp_path: Path) -> None:
    """A monitor's feedback whose answer a stop cut off is posted again, with its key, after the restart. If
    messages.db was restored meanwhile the outbox no longer knows the key: the message id, derived from the key,
    is still the first send's, and WhatsApp (which dedupes by id) posts nothing twice (it was a new random id,
    a second acknowledgement in the group)."""
    _, sim = start_sim(procs, data_dir)
    bridge, url = start_bridge(procs, data_dir)
    backup = cli(procs.config_path, "backup", str(tmp_path / "backup"))
    assert backup.returncode == 0, backup.stderr
    (copy,) = (tmp_path / "backup").glob("*/data/accounts/main/messages.db")
    key = {"Idempotency-Key": "lawley:DR1734150:3EB0AAA:ack"}
    send = {"recipient": GROUP_A, "message": "DR1734150 received"}
    status, first = call("POST", f"{url}/api/send", send, headers=key)
    assert status == 200, first
    bridge.send_signal(signal.SIGTERM)
    assert bridge.wait(timeout=15) == 0
    store = data_dir / "accounts/main/messages.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store}{suffix}").unlink(missing_ok=True)
    store.write_bytes(copy.read_bytes())
    _, url = start_bridge(procs, data_dir)
    status, again = call("POST", f"{url}/api/send", send, headers=key)
    assert (status, again["id"]) == (200, first["id"])
    assert [s["id"] for s in sent(sim)] == [first["id"]]
    status, other = call("POST", f"{url}/api/send", send, headers={"Idempotency-Key": "another"})
    assert status == 200 and other["id"] != first["id"] and len(sent(sim)) == 2  # another key is another message
