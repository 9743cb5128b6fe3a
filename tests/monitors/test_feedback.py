"""Feedback through real bridges and the real simulator: acknowledgements, operator feedback, two numbers, ops."""
from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.bridge_support import inject, start_bridge, start_sim
from tests.conftest import GROUP_A, GROUP_B, Processes, wait_until
from tests.monitor_support import all_sent, cli, query, start_account_bridge, start_monitor
from tests.sim_helpers import SENDER_PHONE, TWO_SESSIONS_CONFIG

CONTRACTOR = "27710000001@s.whatsapp.net"
ACK = "@27710000001 DR1734150 received, thank you"


@pytest.mark.slow
def test_a_new_drop_is_acknowledged_once_with_the_mention(procs: Processes, data_dir: Path) -> None:
    _, sim_url = start_sim(procs, data_dir)
    start_bridge(procs, data_dir)
    start_monitor(procs, "lawley")
    inject(sim_url, "DR1734150 installed", GROUP_A, CONTRACTOR)
    sent = wait_until(lambda: all_sent(sim_url), message="the acknowledgement")
    assert [(s["recipient"], s["text"], s["mentioned_jids"]) for s in sent] == [(GROUP_A, ACK, [CONTRACTOR])]
    wait_until(lambda: query(data_dir, "SELECT feedback_status FROM drops") == [("sent",)], message="status sent")
    (sent_at,) = query(data_dir, "SELECT feedback_sent_at FROM drops")[0]
    assert sent_at is not None
    inject(sim_url, "dr1734150 resubmitted with photos", GROUP_A, "27710000002@s.whatsapp.net")
    wait_until(lambda: query(data_dir, "SELECT kind FROM drop_events ORDER BY id") == [("submitted",), ("resubmitted",)],
               message="the resubmission event")
    # Our own acknowledgement (stored by the bridge, quoting the drop) was not read as a resubmission,
    # and a resubmission is not acknowledged again.
    assert len(all_sent(sim_url)) == 1
    assert query(data_dir, "SELECT COUNT(*) FROM drops") == [(1,)]


@pytest.mark.slow
def test_operator_feedback_is_sent_once_and_bad_requests_send_nothing(procs: Processes, data_dir: Path,
                                                                       config_path: Path) -> None:
    _, sim_url = start_sim(procs, data_dir)
    start_bridge(procs, data_dir)
    start_monitor(procs, "lawley")
    inject(sim_url, "DR1734150 installed", GROUP_A, CONTRACTOR)
    wait_until(lambda: query(data_dir, "SELECT feedback_status FROM drops") == [("sent",)], message="the ack")
    (ack_sent_at,) = query(data_dir, "SELECT feedback_sent_at FROM drops")[0]

    done = cli(config_path, "feedback", "--project", "lawley", "dr1734150", "--message", "needs correction")
    assert done.returncode == 0, done.stderr
    assert "sent: @27710000001 DR1734150 - needs correction" in done.stdout
    feedback = all_sent(sim_url)[-1]
    assert (feedback["recipient"], feedback["text"], feedback["mentioned_jids"]) == (
        GROUP_A, "@27710000001 DR1734150 - needs correction", [CONTRACTOR])
    (status, sent_at), = query(data_dir, "SELECT feedback_status, feedback_sent_at FROM drops")
    assert status == "sent" and sent_at > ack_sent_at

    again = cli(config_path, "feedback", "--project", "lawley", "DR1734150", "--message", "needs correction")
    assert again.returncode == 0 and "already sent" in again.stdout
    for args, problem in ((("--project", "nowhere", "DR1734150"), "no project named 'nowhere'"),
                          (("--project", "lawley", "DR7654321"), "no drop DR7654321 recorded for project lawley"),
                          (("--project", "mohadin", "DR1734150"), "no drop DR1734150 recorded for project mohadin")):
        refused = cli(config_path, "feedback", *args, "--message", "needs correction")
        assert refused.returncode == 1 and problem in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
    assert len(all_sent(sim_url)) == 2


@pytest.mark.slow
def test_two_numbers_feedback_waits_for_the_sender_bridge_and_is_sent_once(procs: Processes, data_dir: Path,
                                                                           write_config) -> None:  # noqa: ANN001
    config_path = write_config(TWO_SESSIONS_CONFIG)
    _, sim_url = start_sim(procs, data_dir)
    start_account_bridge(procs, data_dir, "main")
    start_monitor(procs, "lawley")
    inject(sim_url, "DR1734150 installed", GROUP_A, CONTRACTOR)
    wait_until(lambda: query(data_dir, "SELECT feedback_status FROM drops") == [("pending",)],
               message="the drop with its acknowledgement pending")
    refused = cli(config_path, "feedback", "--project", "lawley", "DR1734150", "--message", "needs correction")
    assert refused.returncode == 1 and "stays pending" in refused.stderr, refused.stderr
    assert query(data_dir, "SELECT feedback_sent_at FROM drops") == [(None,)]

    sender, _ = start_account_bridge(procs, data_dir, "sender")  # the sending number comes up late
    sent = wait_until(lambda: len(all_sent(sim_url)) == 2 and all_sent(sim_url), timeout=15,
                      message="the acknowledgement and the operator feedback")
    assert [(s["session"], s["text"], s["mentioned_jids"]) for s in sent] == [
        (SENDER_PHONE, ACK, [CONTRACTOR]), (SENDER_PHONE, "@27710000001 DR1734150 - needs correction", [CONTRACTOR])]
    wait_until(lambda: query(data_dir, "SELECT feedback_status FROM drops") == [("sent",)], message="status sent")
    # The listening number sees the sender's messages in the group: they are ours, not drops.
    wait_until(lambda: query(data_dir, "SELECT COUNT(*) FROM drop_events") == [(1,)], message="one event")
    sender.send_signal(signal.SIGKILL)
    sender.wait()
    start_account_bridge(procs, data_dir, "sender")
    inject(sim_url, "DR471349", GROUP_A, CONTRACTOR)
    wait_until(lambda: len(all_sent(sim_url)) == 3, timeout=15, message="the next acknowledgement")
    assert [s["text"] for s in all_sent(sim_url)].count(ACK) == 1


@pytest.mark.slow
def test_drops_command_lists_for_ops(procs: Processes, data_dir: Path, config_path: Path) -> None:
    _, sim_url = start_sim(procs, data_dir)
    start_bridge(procs, data_dir)
    start_monitor(procs, "lawley")
    start_monitor(procs, "mohadin")
    inject(sim_url, "DR1734150", GROUP_A, CONTRACTOR)
    inject(sim_url, "DR471349", GROUP_B, "27710000003@s.whatsapp.net")
    wait_until(lambda: query(data_dir, "SELECT COUNT(*) FROM drops WHERE feedback_status = 'sent'") == [(2,)],
               message="both drops acknowledged")

    table = cli(config_path, "drops")
    assert table.returncode == 0, table.stderr
    header, *lines = table.stdout.splitlines()
    assert header.split()[:5] == ["ID", "PROJECT", "DROP", "GROUP", "SUBMITTED"]
    assert [line.split()[1:4] for line in lines] == [["lawley", "DR1734150", "Lawley"], ["mohadin", "DR471349", "Mohadin"]]

    listed = json.loads(cli(config_path, "drops", "--project", "mohadin", "--since", "1h", "--json").stdout)
    assert lines[1].split()[0] == listed[0]["id"] and "public_id" not in listed[0]  # the id the drops API takes
    assert [(d["project"], d["drop_number"], d["group_jid"], d["submitted_by"], d["backfilled"], d["feedback_status"],
             d["resubmissions"]) for d in listed] == [
        ("mohadin", "DR471349", GROUP_B, "27710000003@s.whatsapp.net", False, "sent", 0)]
    assert json.loads(cli(config_path, "drops", "--backfilled", "--json").stdout) == []
    assert "no drops recorded matching the filters" in cli(config_path, "drops", "--backfilled").stdout
    for args, problem in ((("--project", "nowhere"), "no project named 'nowhere'"),
                          (("--since", "yesterday"), "--since 'yesterday'")):
        refused = cli(config_path, "drops", *args)
        assert refused.returncode == 1 and problem in refused.stderr, refused.stderr
