"""The pace end to end: the real bridge against the real simulator, with a small pace (1 s between any two
messages, 1.5-2 s between two to one chat, "typing…" before each text). What went out when is read from the
simulator's /sim/sent times, so nothing here sleeps for the pace: it waits for the simulator to have it all."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from tests.bridge_support import PHONE, call, health, sent, start_bridge, start_sim
from tests.conftest import BASE_CONFIG, GROUP_A, GROUP_B, GROUP_C, PACE_OFF, Processes, wait_until

PACE = ("pace = { per_minute = 60, per_hour = 0, per_day = 0, chat_gap_s = 1.5, chat_jitter_s = 0.5, typing = true, "
        "typing_chars_per_s = 1000, typing_max_s = 0.05, ramp_s = 0 }")
SLACK = 0.05  # the simulator stamps on arrival: one send's network time may shorten a measured gap by this much


@pytest.fixture
def config_path(write_config: Callable[[str], Path]) -> Path:
    return write_config(BASE_CONFIG.replace(PACE_OFF, PACE, 1))


def send(url: str, text: str, recipient: str, priority: str | None = None) -> tuple[int, dict]:
    body = {"recipient": recipient, "message": text, **({"priority": priority} if priority else {})}
    return call("POST", f"{url}/api/send", body, headers={"Idempotency-Key": f"k-{text}"})  # type: ignore[return-value]


@pytest.mark.slow
def test_paced_sends_keep_each_chats_order_and_gap_put_operator_feedback_first_and_answer_their_place(
        procs: Processes, data_dir: Path) -> None:
    _, sim = start_sim(procs, data_dir)
    _, url = start_bridge(procs, data_dir)

    first = send(url, "DR1 ok", GROUP_A)
    assert first[0] == 200, first  # nothing sent before: it goes at once
    answers = {text: send(url, text, chat, priority) for text, chat, priority in
               [("DR2 ok", GROUP_A, None), ("DR3 ok", GROUP_B, None), ("DR4 approved", GROUP_C, "operator")]}
    assert all(status == 202 for status, _ in answers.values()), answers
    assert answers["DR2 ok"][1]["position"] == 1
    assert answers["DR3 ok"][1]["position"] == 1  # due before DR2, which waits for group A's gap
    assert answers["DR4 approved"][1]["position"] == 1  # operator feedback goes first
    assert "Paced: queued" in answers["DR4 approved"][1]["message"] and answers["DR4 approved"][1]["expected_at"]
    queue = health(url)["sending"]
    assert queue["depth"] == 3 and queue["next_send_at"] and queue["drain_s"] > 0, queue

    out = wait_until(lambda: s if len(s := sent(sim)) == 4 else None, timeout=20, message="all four sent")
    # DR4 took the second's slot; by the third (2 s in) group A's gap is over too, and of two due the older goes.
    assert [m["text"] for m in out] == ["DR1 ok", "DR4 approved", "DR2 ok", "DR3 ok"]
    times = [datetime.fromisoformat(m["time"]).timestamp() for m in out]
    assert all(b - a >= 1.0 - SLACK for a, b in zip(times, times[1:])), times  # 60 a minute: one a second
    assert times[2] - times[0] >= 1.5 - SLACK  # group A's gap
    presences = call("GET", f"{sim}/sim/interactions")[1]["presences"]
    assert {(p["session"], p["chat_jid"]) for p in presences if p["composing"]} == {
        (PHONE, GROUP_A), (PHONE, GROUP_B), (PHONE, GROUP_C)}  # "typing…" before the texts
    wait_until(lambda: health(url)["sending"]["depth"] == 0, timeout=5, message="the queue to be empty")
    assert health(url)["sending"]["drain_s"] == 0.0
