"""WhatsApp's limits end to end: the real bridge against the real simulator, which answers rate-overlimit
above a configured rate, bans a sender that keeps going, refuses a cold contact with 463 and logs out on
command (POST /sim/limits, /sim/logout)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.supervision import classify
from tests.bridge_support import PHONE, call, health, rows, sent, sessions, start_bridge, start_sim
from tests.conftest import BASE_CONFIG, GROUP_A, Processes, wait_until
from watchdog.core import probes

COLD_CONTACT = "27710000555@s.whatsapp.net"


@pytest.fixture
def config_path(write_config: Callable[[str], Path]) -> Path:
    return write_config(BASE_CONFIG.replace(f'phone = "{PHONE}"\n', f'phone = "{PHONE}"\nsend_pause_s = 1.0\n', 1))


def send(url: str, text: str, recipient: str = GROUP_A) -> tuple[int, dict]:
    # With a key the answer does not wait for delivery: 202 at once while sending is paused.
    return call("POST", f"{url}/api/send", {"recipient": recipient, "message": text},  # type: ignore[return-value]
                headers={"Idempotency-Key": f"k-{text}"})


def state(url: str, wanted: str) -> dict | None:
    answer = health(url)
    return answer if answer.get("state") == wanted else None


@pytest.mark.slow
def test_rate_overlimit_slows_down_a_ban_holds_everything_until_it_expires_and_nothing_is_lost(
        procs: Processes, data_dir: Path) -> None:
    _, sim = start_sim(procs, data_dir)
    _, url = start_bridge(procs, data_dir)
    limits = {"session": PHONE, "per_minute": 2, "ban_after": 2, "ban_s": 4, "ban_code": "SEND_TO_TOO_MANY_PEOPLE",
              "refuse": [COLD_CONTACT]}
    assert call("POST", f"{sim}/sim/limits", limits)[0] == 200

    status, body = send(url, "to a cold contact", COLD_CONTACT)
    assert status == 422 and "error 463: refused for this contact" in body["message"]  # failed at once, not retried
    assert [send(url, f"DR{n} ok")[0] for n in (1, 2)] == [200, 200]
    status, body = send(url, "DR3 ok")  # over the rate: WhatsApp answers 429, the account pauses
    assert status == 202 and "Sending paused (WhatsApp answered rate-overlimit (429)" in body["message"]
    # The pause runs out, the outbox tries again, meets a second 429 and the simulator bans the number.
    banned = wait_until(lambda: state(url, "temporary_ban"), timeout=15, message="the temporary ban")
    assert "temporary ban by WhatsApp (SEND_TO_TOO_MANY_PEOPLE) until" in banned["reason"]
    assert banned["sending"]["paused"] and "SEND_TO_TOO_MANY_PEOPLE" in banned["sending"]["reason"]
    result = classify(503, banned)  # what the watchdog makes of it: the temporary_ban alert, with code and expiry
    assert (result.kind, result.state) == (probes.OPERATOR, "temporary_ban") and "until" in result.detail
    assert sessions(sim)["standing"]["rate_limited"] == 2 and sessions(sim)["standing"]["banned_for_s"] > 0
    assert send(url, "DR4 ok")[0] == 202  # nothing goes out while banned: queued

    # WhatsApp lifts its limit; at the expiry the bridge connects again by itself and the queue drains in order.
    assert call("POST", f"{sim}/sim/limits", {"session": PHONE})[0] == 200
    wait_until(lambda: state(url, "connected"), timeout=15, message="the bridge to connect after the ban")
    wait_until(lambda: [m["text"] for m in sent(sim)] == ["DR1 ok", "DR2 ok", "DR3 ok", "DR4 ok"], timeout=15,
               message="every queued message sent once, in order")
    assert rows(data_dir, "SELECT status, error LIKE '%error 463%' FROM outbox WHERE text = 'to a cold contact'") == [
        ("failed", 1)]
    assert [k for (k,) in rows(data_dir, "SELECT kind FROM connection_events WHERE kind != 'offline_sync_done'")] == [
        "connected", "temporary_ban", "connected"]
    assert not health(url)["sending"]["paused"]


@pytest.mark.slow
def test_a_logout_on_the_phone_alerts_and_the_bridge_stops_sending(procs: Processes, data_dir: Path) -> None:
    _, sim = start_sim(procs, data_dir)
    bridge, url = start_bridge(procs, data_dir)
    status, body = call("POST", f"{sim}/sim/logout", {"session": PHONE})
    assert (status, body) == (200, {"logged_out": True, "was_connected": True})
    answer = wait_until(lambda: state(url, "logged_out"), message="health to report logged_out")
    assert "linked device was removed" in answer["reason"]
    assert classify(503, answer).kind == probes.OPERATOR  # the logged_out alert
    assert send(url, "DR5 ok")[0] == 202 and sent(sim) == []  # queued, never sent by a logged-out session
    assert sessions(sim)["connections"] == 1 and bridge.poll() is None  # no reconnect loop; health still served
