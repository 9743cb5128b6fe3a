"""A second number takes over sending (`send_accounts`), end to end: two simulated numbers with their own bridges,
the first temporarily banned through the simulator (POST /sim/limits): every acknowledgement after the ban is seen
goes out from the second number, sending returns to the first after the ban, each change is in the recovery log
with its cause and the alert fires once."""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.bridge_support import call, health, inject, start_sim
from tests.conftest import BASE_CONFIG, GROUP_A, MESSAGE_ACK, PACE_OFF, Processes, wait_until
from tests.monitor_support import all_sent, cli, query, start_account_bridge, start_monitor
from tests.monitors.test_group_watch import AlertInbox
from watchdog.components import load
from watchdog.shared.config import ConfigError
from watchdog.shared.recovery_log import RecoveryLog

FIRST, BACKUP = "27710000009", "27710000008"  # main (27710000000) listens
CONTRACTOR = "27710000001@s.whatsapp.net"


@pytest.fixture
def inbox() -> Iterator[AlertInbox]:
    receiver = AlertInbox()
    yield receiver
    receiver.close()


def two_numbers(alert_url: str = "http://127.0.0.1:9/alerts") -> str:
    """lawley listens with main and sends through first, then backup (a ban disconnects a number: the one that
    listens should not be the one that sends much); every number is in its group."""
    text = BASE_CONFIG.replace('participants = ["27710000001", "27710000002"]',
                               f'participants = ["27710000000", "{FIRST}", "{BACKUP}", "27710000001", "27710000002"]')
    text = text.replace('name = "lawley"\n', 'name = "lawley"\nlisten_account = "main"\n'
                        'send_accounts = ["first", "backup"]\n', 1)
    text = text.replace(MESSAGE_ACK, 'feedback = { ack = "message", coalesce_s = 0, failover_after_s = 3 }', 1)
    text = text.replace('name = "mohadin"\n', 'name = "mohadin"\nlisten_account = "main"\n', 1)
    accounts = "".join(f'\n[accounts.{name}]\ntransport = "sim"\nphone = "{phone}"\napi_port = 0\n'
                       f'{PACE_OFF}\n'  # the simulator's limit, not our pace, must be what a burst meets
                       'send_pause_s = 1.0\n'  # a rate-overlimit pauses it 1 s (not 30): the ban is what moves sending
                       for name, phone in (("first", FIRST), ("backup", BACKUP)))
    return text + accounts + f'\n[[alerts]]\nurl = "{alert_url}"\nformat = "json"\nrules = ["feedback_failover"]\n'



def sent_by(sim_url: str) -> list[tuple[str, str]]:
    """(number, drop) of every acknowledgement sent, in order."""
    return [(s["session"], s["text"].split()[1]) for s in all_sent(sim_url) if "received" in s["text"]]


@pytest.mark.slow
def test_a_banned_first_number_hands_feedback_to_the_second_and_gets_it_back(
        procs: Processes, data_dir: Path, write_config, inbox: AlertInbox) -> None:  # noqa: ANN001
    config_path = write_config(two_numbers(inbox.url))
    config = load(config_path)
    _, sim_url = start_sim(procs, data_dir)
    start_account_bridge(procs, data_dir, "main")
    _, first_url = start_account_bridge(procs, data_dir, "first")
    start_account_bridge(procs, data_dir, "backup")
    start_monitor(procs, "lawley")
    inject(sim_url, "DR1000001 installed", GROUP_A, CONTRACTOR)
    wait_until(lambda: sent_by(sim_url) == [(FIRST, "DR1000001")], message="the first ack, from the first number")

    # The first number sends too much: one more send over a rate of 1 a minute gets it banned for a while.
    limits = {"session": FIRST, "per_minute": 1, "ban_after": 1, "ban_s": 8, "ban_code": "SEND_TO_TOO_MANY_PEOPLE"}
    assert call("POST", f"{sim_url}/sim/limits", limits)[0] == 200
    call("POST", f"{first_url}/api/send", {"recipient": GROUP_A, "message": "one too many"},
         headers={"Idempotency-Key": "one-too-many"})
    wait_until(lambda: health(first_url).get("state") == "temporary_ban", message="the first number banned")
    assert call("POST", f"{sim_url}/sim/limits", {"session": FIRST})[0] == 200  # the ban runs out by itself

    for n in (2, 3):
        inject(sim_url, f"DR100000{n} installed", GROUP_A, CONTRACTOR)
    wait_until(lambda: sent_by(sim_url)[1:] == [(BACKUP, "DR1000002"), (BACKUP, "DR1000003")], timeout=20,
               message="the acks during the ban, from the second number")
    # operator feedback (`wa-watchdog feedback`, its own process) goes through the second number too
    done = cli(config_path, "feedback", "--project", "lawley", "DR1000002", "--message", "needs photos")
    assert done.returncode == 0, done.stderr
    assert [s["session"] for s in all_sent(sim_url) if s["text"].endswith("needs photos")] == [BACKUP]
    (over,) = [r for r in RecoveryLog(config.watchdog.recovery_log).read() if r["event"] == "failover"]
    assert (over["component"], over["account"], over["previous"]) == ("monitor:lawley", "backup", "first")
    assert over["cause"].startswith("first temporary_ban: temporary ban by WhatsApp (SEND_TO_TOO_MANY_PEOPLE)")

    # The ban expires, the first bridge connects again by itself, and sending returns to it.
    wait_until(lambda: health(first_url).get("state") == "connected" and not (health(first_url)["sending"] or {}).get(
        "paused"), timeout=20, message="the ban over")
    inject(sim_url, "DR1000004 installed", GROUP_A, CONTRACTOR)
    wait_until(lambda: sent_by(sim_url)[3:] == [(FIRST, "DR1000004")], timeout=20,
               message="the next ack, from the first number again")
    (back,) = [r for r in RecoveryLog(config.watchdog.recovery_log).read() if r["event"] == "failback"]
    assert (back["account"], back["previous"], back["cause"]) == ("first", "backup", "first can send again")
    wait_until(lambda: query(data_dir, "SELECT kind, COUNT(*) FROM feedback WHERE status = 'sent' GROUP BY kind "
                             "ORDER BY kind") == [("ack", 4), ("operator", 1)],
               message="every feedback marked sent (the bridge's answer follows the send)")
    assert sorted(drop for _, drop in sent_by(sim_url)) == [f"DR100000{n}" for n in (1, 2, 3, 4)]  # each once
    bodies = wait_until(lambda: len(inbox.bodies) == 2 and inbox.bodies, message="the alert fired and resolved")
    assert [(b["status"], b["rule"], b["component"]) for b in bodies] == [
        ("firing", "feedback_failover", "monitor:lawley"), ("resolved", "feedback_failover", "monitor:lawley")]
    assert "now through backup (was first): first temporary_ban" in bodies[0]["summary"]


def outbox(store: Path, but: str = "one-too-many") -> list[tuple[str, int]]:
    """(status, count) of the rows in a bridge's outbox (but the one of key `but`)."""
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5) as conn:
        return list(conn.execute("SELECT status, COUNT(*) FROM outbox WHERE idempotency_key IS NOT ? GROUP BY status "
                                 "ORDER BY status", (but or None,)))


# One ack to the group every 10 s: the failover's bound (below), so the held acks stay held if the ban (8 s) ends first.
FIRST_PACED = ("pace = { per_minute = 0, per_hour = 0, per_day = 0, reactions_per_minute = 0, chat_gap_s = 10, "
               "chat_jitter_s = 0, typing = false, ramp_s = 0 }")


@pytest.mark.slow
def test_acks_queued_in_a_banned_numbers_outbox_go_out_through_the_second_at_once_and_never_twice(
        procs: Processes, data_dir: Path, write_config) -> None:  # noqa: ANN001
    """Issue 22: a failover takes back what the banned number's outbox still holds (POST /api/withdraw) and sends
    it through the second number; when the ban ends the first number sends none of it."""
    config_path = write_config(two_numbers().replace(f'phone = "{FIRST}"\napi_port = 0\n{PACE_OFF}',
                                                     f'phone = "{FIRST}"\napi_port = 0\n{FIRST_PACED}', 1))
    config = load(config_path)
    assert config.accounts["first"].pace.chat_gap_s == 10
    _, sim_url = start_sim(procs, data_dir)
    start_account_bridge(procs, data_dir, "main")
    _, first_url = start_account_bridge(procs, data_dir, "first")
    start_account_bridge(procs, data_dir, "backup")
    start_monitor(procs, "lawley")
    for n in (1, 2, 3):
        inject(sim_url, f"DR100000{n} installed", GROUP_A, CONTRACTOR)
    wait_until(lambda: query(data_dir, "SELECT COUNT(*) FROM feedback WHERE status = 'queued'") == [(2,)],
               message="two acks queued behind the first number's pace")
    assert sent_by(sim_url) == [(FIRST, "DR1000001")]

    limits = {"session": FIRST, "per_minute": 1, "ban_after": 1, "ban_s": 8, "ban_code": "SEND_TO_TOO_MANY_PEOPLE"}
    assert call("POST", f"{sim_url}/sim/limits", limits)[0] == 200
    call("POST", f"{first_url}/api/send", {"recipient": CONTRACTOR, "message": "one too many"},
         headers={"Idempotency-Key": "one-too-many"})  # another chat: not held by the group's gap
    wait_until(lambda: health(first_url).get("state") == "temporary_ban", message="the first number banned")
    banned = time.monotonic()
    assert call("POST", f"{sim_url}/sim/limits", {"session": FIRST})[0] == 200  # the ban runs out by itself
    wait_until(lambda: sent_by(sim_url)[1:] == [(BACKUP, "DR1000002"), (BACKUP, "DR1000003")], timeout=20,
               message="the acks the first number held, from the second number")
    moved = time.monotonic() - banned
    assert outbox(config.account("first").store) == [("sent", 1), ("withdrawn", 2)]
    (back,) = [r for r in RecoveryLog(config.watchdog.recovery_log).read() if r["event"] == "feedback_taken_back"]
    assert (back["account"], back["feedback"]) == ("bridge:first", 2)

    # The ban ends and sending returns to the first number: the next ack comes from it, the held ones never do.
    wait_until(lambda: health(first_url).get("state") == "connected", timeout=30, message="the ban over")
    inject(sim_url, "DR1000004 installed", GROUP_A, CONTRACTOR)
    wait_until(lambda: ("DR1000004" in [d for _, d in sent_by(sim_url)]), timeout=40,
               message="the next ack, from the first number again")
    wait_until(lambda: outbox(config.account("first").store, "") == [("sent", 3), ("withdrawn", 2)], timeout=30,
               message="the first number's outbox drained: DR1000004 and the message of the ban sent")
    assert sent_by(sim_url) == [(FIRST, "DR1000001"), (BACKUP, "DR1000002"), (BACKUP, "DR1000003"),
                                (FIRST, "DR1000004")]
    assert query(data_dir, "SELECT COUNT(*) FROM feedback WHERE status = 'sent'") == [(4,)]
    # nothing new was posted after the ban: the monitor looks at a number holding queued feedback every LOOK_S (1 s),
    # not only every RECHECK_INTERVAL (5 s), so the 5 s from the ban holds also while coalescing posts nothing
    assert moved < 3.5, f"the held acks went out {moved:.1f} s after the ban was seen"


def test_send_accounts_are_checked_naming_the_key(write_config) -> None:  # noqa: ANN001
    config = load(write_config(two_numbers()))
    lawley = config.project("lawley")
    assert (lawley.send_account, lawley.send_accounts) == ("first", ["first", "backup"])
    assert config.project("mohadin").send_accounts == ["main"]  # send_account alone: the one-element case
    assert set(config.first_senders()) == {"first", "backup", "main"}  # the second number's receipts are followed too
    for change, key, problem in (
            ('send_accounts = ["first", "spare"]', r"send_accounts\[1\]", "no account named 'spare'"),
            ('send_accounts = ["first", "first"]', r"send_accounts\[1\]", "'first' repeats"),
            ('send_accounts = ["first", "backup"]\nsend_account = "backup"', r"send_account",
             "'backup' is not the first of send_accounts")):
        text = two_numbers().replace('send_accounts = ["first", "backup"]', change, 1)
        with pytest.raises(ConfigError, match=rf"projects\[lawley\]\.{key}: {problem}"):
            load(write_config(text))


def test_numbers_linked_through_send_accounts_share_one_sender_lease(write_config) -> None:  # noqa: ANN001
    config = load(write_config(two_numbers()))
    assert config.sending_groups() == {"first": ["first", "backup"], "main": ["main"]}
    assert (config.lease_account(config.project("lawley")), config.lease_account(config.project("mohadin"))) == (
        "first", "main")
    # mohadin sends through backup, which lawley fails over to: one lease for both, or two hosts could send through it
    linked = load(write_config(two_numbers().replace('name = "mohadin"\nlisten_account = "main"\n',
                                                     'name = "mohadin"\nlisten_account = "main"\n'
                                                     'send_account = "backup"\n', 1)))
    assert linked.sending_groups() == {"first": ["first", "backup"]}
    assert {linked.lease_account(p) for p in linked.projects} == {"first"}


@pytest.mark.slow
def test_a_logged_out_first_number_hands_feedback_to_the_second(procs: Processes, data_dir: Path,
                                                                 write_config) -> None:  # noqa: ANN001
    config = load(write_config(two_numbers()))
    _, sim_url = start_sim(procs, data_dir)
    start_account_bridge(procs, data_dir, "main")
    _, first_url = start_account_bridge(procs, data_dir, "first")
    start_account_bridge(procs, data_dir, "backup")
    start_monitor(procs, "lawley")
    assert call("POST", f"{sim_url}/sim/logout", {"session": FIRST})[0] == 200
    wait_until(lambda: health(first_url).get("state") == "logged_out", message="the first number logged out")
    inject(sim_url, "DR1000001 installed", GROUP_A, CONTRACTOR)
    wait_until(lambda: sent_by(sim_url) == [(BACKUP, "DR1000001")], message="the ack from the second number")
    (over,) = [r for r in RecoveryLog(config.watchdog.recovery_log).read() if r["event"] == "failover"]
    assert over["cause"].startswith("first logged_out")


@pytest.mark.slow
def test_check_says_when_a_sending_number_is_not_in_the_group(procs: Processes, data_dir: Path,
                                                               write_config) -> None:  # noqa: ANN001
    # backup is in another group, not lawley's (the simulator puts a number no group lists in every group)
    config_path = write_config(two_numbers().replace(f'"{BACKUP}", ', "", 1).replace(
        'participants = ["27710000004"]', f'participants = ["27710000004", "{BACKUP}"]', 1))
    start_sim(procs, data_dir)
    for account in ("main", "first", "backup"):
        start_account_bridge(procs, data_dir, account)
    checked = wait_until(lambda: (done := cli(config_path, "check")) and "WhatsApp has not listed" not in done.stdout
                         and done, timeout=20, message="check with every number's groups known")
    assert checked.returncode == 1, checked.stdout
    assert (f"FAIL  groups    account backup is not in group {GROUP_A} (project lawley): its feedback cannot be "
            "sent through this number") in checked.stdout, checked.stdout
    assert "account first is in every followed group (1)" in checked.stdout
