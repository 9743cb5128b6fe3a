"""Operator feedback goes before the automatic acknowledgements the bridge's pace holds for other groups, both ways
an operator sends it (`wa-watchdog feedback`, the drops-api's `/api/drops/{id}/feedback`), while its own group's
earlier messages still go first (bridge/pace.py: one chat's order is never changed). The real monitor, drops-api,
bridge and simulator, with a pace of one message a second: what went out in which order is read from the simulator.
"""
from __future__ import annotations


import pytest

from tests.bridge_support import inject, start_bridge, start_sim
from tests.conftest import GROUP_A, GROUP_C, PACE_OFF, Processes, wait_until
from tests.monitor_support import all_sent, cli, query, start_monitor
from tests.monitors.test_drops_api import api_config, get, post, start_api

PACE = ("pace = { per_minute = 60, per_hour = 0, per_day = 0, reactions_per_minute = 0, chat_gap_s = 0, "
        "chat_jitter_s = 0, typing = false, ramp_s = 0 }")
FLOOD = 15  # acknowledgements queued for group C: 15 s of the pace, far longer than an operator takes to post (~4 s)
CONTRACTOR, OTHER = "27710000001@s.whatsapp.net", "27710000004@s.whatsapp.net"


def ack(number: str, drop: str) -> str:
    return f"@{number} {drop} received, thank you"


@pytest.mark.slow
def test_operator_feedback_goes_before_acks_queued_for_other_groups_and_after_its_own_groups(
        write_config) -> None:  # noqa: ANN001
    config_path = write_config(api_config().replace(PACE_OFF, PACE, 1).replace(
        f'groups = ["{GROUP_A}"]', f'groups = ["{GROUP_A}", "{GROUP_C}"]', 1))
    data_dir = config_path.parent / "data"
    procs = Processes(config_path)
    try:
        _, sim = start_sim(procs, data_dir)
        start_bridge(procs, data_dir)
        start_monitor(procs, "lawley")
        api = start_api(procs, data_dir)
        inject(sim, "DR1000001 installed", GROUP_A, CONTRACTOR)
        wait_until(lambda: all_sent(sim), timeout=30, message="the first acknowledgement, sent at once")
        flood = [f"DR20000{n:02d}" for n in range(FLOOD)]
        for drop in flood:
            inject(sim, f"{drop} installed", GROUP_C, OTHER)
        inject(sim, "DR1000002 installed", GROUP_A, CONTRACTOR)
        wait_until(lambda: query(data_dir, "SELECT COUNT(*), COUNT(*) FILTER (WHERE status != 'pending') "
                                           "FROM feedback") == [(FLOOD + 2, FLOOD + 2)],
                   timeout=30, message="every acknowledgement handed to the bridge's outbox")

        done = cli(config_path, "feedback", "--project", "lawley", "DR1000001", "--message", "needs correction")
        assert done.returncode == 0 and done.stdout.startswith(("queued", "sent")), (done.stdout, done.stderr)
        after_cli = len(all_sent(sim))
        drops = {d["drop_number"]: d["id"] for d in get(f"{api}/api/drops?project=lawley")[1]["drops"]}
        status, body = post(f"{api}/api/drops/{drops['DR1000002']}/feedback", {"message": "approved"})
        assert status == 200 and body["feedback"]["status"] in ("queued", "sent"), body
        after_api = len(all_sent(sim))
        out = wait_until(lambda: m if len(m := all_sent(sim)) == FLOOD + 4 else None, timeout=90,
                         message="every acknowledgement and both operator messages sent")
    finally:
        procs.stop_all()

    texts = [m["text"] for m in out]
    correction, approval = "@27710000001 DR1000001 - needs correction", "@27710000001 DR1000002 - approved"
    assert [m["text"] for m in out if m["recipient"] == GROUP_A] == [
        ack("27710000001", "DR1000001"), ack("27710000001", "DR1000002"), correction, approval]  # A's order kept
    acks_c = {ack("27710000004", drop) for drop in flood}
    assert [t for t in texts if t in acks_c] == [ack("27710000004", drop) for drop in flood]  # C's order kept
    for operator, posted in ((correction, after_cli), (approval, after_api)):
        # Sent after the operator's post was answered, yet before it: at most the one C acknowledgement the
        # outbox was already sending when it was queued.
        overtaken = [t for t in texts[posted:texts.index(operator)] if t in acks_c]
        assert len(overtaken) <= 1, (operator, texts)
    assert sum(t in acks_c for t in texts[texts.index(approval):]) >= 3, texts  # the acks really were queued
