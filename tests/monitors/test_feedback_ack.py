"""`feedback.ack`: a drop acknowledged by a reaction on the contractor's message (no message in the group) or
by a reply quoting it; operator feedback quoting the post it answers; message acknowledgements of one group
coalesced into one message. Through the real monitor, bridge and simulator."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.bridge_support import call, inject, start_bridge, start_sim
from tests.conftest import BASE_CONFIG, GROUP_A, MESSAGE_ACK, Processes, wait_until
from tests.monitor_support import all_sent, cli, query, start_monitor
from watchdog.components import load
from watchdog.shared.config import ConfigError

CONTRACTOR = "27710000001@s.whatsapp.net"
OTHER = "27710000002@s.whatsapp.net"
ACK = "@27710000001 DR1734150 received, thank you"


def with_ack(mode: str, more: str = "") -> str:
    """The suite's config with lawley acknowledging by `mode` ('' for the product's default), plus `more` keys."""
    return BASE_CONFIG.replace(MESSAGE_ACK, f'feedback = {{ ack = "{mode}"{more} }}' if mode else "", 1)


@pytest.mark.slow
def test_a_reaction_acknowledges_the_drop_without_a_message(procs: Processes, data_dir: Path, write_config) -> None:  # noqa: ANN001
    write_config(with_ack(""))  # the default
    _, sim_url = start_sim(procs, data_dir)
    start_bridge(procs, data_dir)
    start_monitor(procs, "lawley")
    drop = inject(sim_url, "DR1734150 installed", GROUP_A, CONTRACTOR)["id"]
    wait_until(lambda: query(data_dir, "SELECT feedback_status FROM drops") == [("sent",)], message="the ack sent")
    (reaction,) = call("GET", f"{sim_url}/sim/interactions")[1]["reactions"]
    assert (reaction["chat_jid"], reaction["message_id"], reaction["sender_jid"], reaction["emoji"]) == (
        GROUP_A, drop, CONTRACTOR, "✅")
    assert all_sent(sim_url) == []  # nothing added to the group
    assert query(data_dir, "SELECT kind, text, bridge_message_id FROM feedback") == [("ack", "✅", reaction["id"])]


@pytest.mark.slow
def test_a_reply_acknowledges_the_drop_quoting_the_contractors_message(procs: Processes, data_dir: Path,
                                                                       write_config) -> None:  # noqa: ANN001
    write_config(with_ack("reply", ", coalesce_s = 1"))  # coalesced, but alone in its group: posted as it is
    _, sim_url = start_sim(procs, data_dir)
    start_bridge(procs, data_dir)
    start_monitor(procs, "lawley")
    drop = inject(sim_url, "DR1734150 installed", GROUP_A, CONTRACTOR)["id"]
    (sent,) = wait_until(lambda: all_sent(sim_url), message="the acknowledgement")
    assert (sent["text"], sent["mentioned_jids"]) == (ACK, [CONTRACTOR])
    assert sent["quote"] == {"message_id": drop, "sender_jid": CONTRACTOR, "text": "DR1734150"}


@pytest.mark.slow
def test_operator_feedback_quotes_the_contractors_latest_post(procs: Processes, data_dir: Path,
                                                               config_path: Path) -> None:
    _, sim_url = start_sim(procs, data_dir)
    start_bridge(procs, data_dir)
    start_monitor(procs, "lawley")
    inject(sim_url, "DR1734150 installed", GROUP_A, CONTRACTOR)
    wait_until(lambda: query(data_dir, "SELECT feedback_status FROM drops") == [("sent",)], message="the ack")
    assert all_sent(sim_url)[0]["quote"] is None  # a message ack (the suite's config) quotes nothing
    again = inject(sim_url, "DR1734150 with photos", GROUP_A, CONTRACTOR)["id"]
    wait_until(lambda: query(data_dir, "SELECT COUNT(*) FROM drop_events") == [(2,)], message="the resubmission")
    done = cli(config_path, "feedback", "--project", "lawley", "DR1734150", "--message", "approved")
    assert done.returncode == 0, done.stderr
    feedback = all_sent(sim_url)[-1]
    assert (feedback["text"], feedback["mentioned_jids"]) == ("@27710000001 DR1734150 - approved", [CONTRACTOR])
    assert feedback["quote"] == {"message_id": again, "sender_jid": CONTRACTOR, "text": "DR1734150"}


def test_the_default_ack_is_a_reaction(write_config) -> None:  # noqa: ANN001
    config = load(write_config(with_ack("")))
    assert config.project("lawley").feedback.ack == "reaction"
    assert config.project("mohadin").feedback.ack == "message"  # the suite's config says so explicitly


def test_an_unknown_ack_mode_is_a_config_error_naming_the_key(write_config) -> None:  # noqa: ANN001
    problem = r"projects\[lawley\]\.feedback\.ack: one of reaction, reply, message, got 'thumbs'"
    with pytest.raises(ConfigError, match=problem):
        load(write_config(with_ack("thumbs")))


@pytest.mark.slow
def test_acks_falling_due_together_go_out_as_one_message_whose_receipts_stamp_each(
        procs: Processes, data_dir: Path, write_config) -> None:  # noqa: ANN001
    write_config(BASE_CONFIG.replace(MESSAGE_ACK, 'feedback = { ack = "message", coalesce_s = 2.0 }', 1))
    _, sim_url = start_sim(procs, data_dir)
    start_bridge(procs, data_dir)
    start_monitor(procs, "lawley")
    for text, sender in (("DR1000001 done", CONTRACTOR), ("DR1000002 done", OTHER), ("DR1000003 done", CONTRACTOR)):
        inject(sim_url, text, GROUP_A, sender)
    wait_until(lambda: query(data_dir, "SELECT COUNT(*) FROM feedback WHERE status = 'sent'") == [(3,)],
               message="the three acknowledgements sent")
    (sent,) = all_sent(sim_url)  # one message for the three drops
    assert sent["text"] == ("@27710000001 DR1000001, DR1000003 received, thank you\n"
                            "@27710000002 DR1000002 received, thank you")
    assert sent["mentioned_jids"] == [CONTRACTOR, OTHER]
    carried = query(data_dir, "SELECT bridge_message_id, carrier_id FROM feedback ORDER BY id")
    assert {row for row in carried} == {(sent["id"], query(data_dir, "SELECT MIN(id) FROM feedback")[0][0])}
    wait_until(lambda: query(data_dir, "SELECT COUNT(*) FROM feedback WHERE delivered_at IS NOT NULL") == [(3,)],
               message="the message's delivery receipt stamped on each drop's feedback")


def test_an_out_of_range_coalesce_window_is_a_config_error_naming_the_key(write_config) -> None:  # noqa: ANN001
    text = BASE_CONFIG.replace(MESSAGE_ACK, 'feedback = { coalesce_s = -1 }', 1)
    with pytest.raises(ConfigError, match=r"projects\[lawley\]\.feedback\.coalesce_s: must be 0 \(off\) to 60"):
        load(write_config(text))
