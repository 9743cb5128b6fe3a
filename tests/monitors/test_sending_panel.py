"""Sending per account (issue 22) in the console and `wa-watchdog status`: each number sending or paused, why and
until when, its queue, and which number each project's feedback goes through now.

The model is read from the watchdog's status items (each bridge's last health answer, in the shapes the bridge
answers); end to end, a real `wa-watchdog run` with two sending numbers shows a banned number paused with WhatsApp's
code and its expiry, the paced queue of the second number, and the project's feedback through it.
"""
from __future__ import annotations

import json
import re
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest

from monitors.sending_panel import SendingView, read, sections
from scripts.benchmarks.system_run import RunningSystem, http
from tests.bridge_support import call
from tests.conftest import GROUP_A, PACE_OFF, wait_until
from tests.monitor_support import cli
from tests.monitors.test_failover import BACKUP, CONTRACTOR, FIRST, two_numbers
from watchdog.components import load
from watchdog.shared import endpoints

NOON = datetime(2030, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
BAN = "temporary ban by WhatsApp (SEND_TO_TOO_MANY_PEOPLE) until 2030-01-01T12:00:08+00:00"


def item(account: str, connection: dict | None) -> dict:
    return {"name": f"bridge:{account}", "connection": connection}


def connected(depth: int = 0, next_send_at: str | None = None, drain_s: float = 0.0, paused: bool = False,
              until: str | None = None, reason: str = "") -> dict:
    return {"state": "connected", "reason": "", "connected": True, "open_window": None, "outbox_depth": depth,
            "sending": {"paused": paused, "reason": reason, "until": until, "rate_limited": 0, "depth": depth,
                        "next_send_at": next_send_at, "next_send_s": None, "drain_s": drain_s}}


def away(state: str, reason: str, since: str | None = None, sending: dict | None = None) -> dict:
    return {**connected(), "state": state, "reason": reason, "connected": False,
            "open_window": {"started_at": since, "reason": reason} if since else None,
            "sending": sending or connected()["sending"]}


def test_each_account_says_whether_it_sends_why_not_and_until_when(write_config, fixed_clock) -> None:  # noqa: ANN001
    fixed_clock(NOON)
    config = load(write_config(two_numbers()))
    until = "2030-01-01T12:00:08+00:00"
    banned = connected(1, until, 8.0, paused=True, until=until, reason=BAN)["sending"]
    view = read(config, [
        item("main", connected()),
        item("first", away("temporary_ban", BAN, "2030-01-01 11:59:58.000000+00:00", banned)),
        item("backup", connected(2, "2030-01-01T12:00:30+00:00", 60.0)),
    ])
    rows = {a.account: (a.phone, a.sending, a.why, a.until, a.queue, a.drain_s, a.next_send_at) for a in view.accounts}
    assert rows == {
        "main": ("27710000000", "sending", "", None, 0, 0.0, None),
        "first": (FIRST, "paused", BAN, "2030-01-01T12:00:08+00:00", 1, 8.0, "2030-01-01T12:00:08+00:00"),
        "backup": (BACKUP, "sending", "", None, 2, 60.0, "2030-01-01T12:00:30+00:00")}
    routes = {r.project: (r.through, r.cause) for r in view.routes}
    assert routes == {"lawley": ("backup", f"first temporary_ban: {BAN}"), "mohadin": ("main", "")}
    [section] = sections(config, [item("first", None)])
    text = "\n".join(section.lines)
    assert "no health answer from its bridge" in text and "none can send" in text
    assert section.data["projects"][0] == {"project": "lawley", "accounts": ["first", "backup"], "through": "",
                                           "cause": "first: no health answer from its bridge; backup: no health "
                                                    "answer from its bridge"}


@pytest.mark.parametrize(("first", "sending", "why", "through"), [
    (connected(paused=True, until="2030-01-01T12:00:30+00:00", reason="server returned error 429: rate-overlimit"),
     "paused", "rate-limited by WhatsApp: server returned error 429: rate-overlimit", "backup"),  # 30 s > 3 s
    (connected(paused=True, until="2030-01-01T12:00:02+00:00", reason="429"), "paused", "rate-limited by WhatsApp: "
     "429", "first"),  # over before failover_after_s: its outbox sends then
    (away("disconnected", "server disconnect", "2030-01-01 11:59:59.000000+00:00"), "paused",
     "disconnected since 11:59:59 UTC: server disconnect", "first"),  # 1 s: a short disconnect does not move sending
    (away("disconnected", "server disconnect", "2030-01-01 11:59:50.000000+00:00"), "paused",
     "disconnected since 11:59:50 UTC: server disconnect", "backup"),
    (away("logged_out", "the linked device was removed on the phone"), "stopped",
     "logged out: the linked device was removed on the phone", "backup"),
])
def test_why_a_number_does_not_send_and_where_the_projects_feedback_goes(  # noqa: ANN001
        write_config, fixed_clock, first: dict, sending: str, why: str, through: str) -> None:
    fixed_clock(NOON)
    view = read(load(write_config(two_numbers())), [item("first", first), item("backup", connected())])
    account = next(a for a in view.accounts if a.account == "first")
    assert (account.sending, account.why) == (sending, why)
    assert next(r.through for r in view.routes if r.project == "lawley") == through


def test_the_panel_marks_each_row_and_escapes_what_whatsapp_said(write_config, fixed_clock) -> None:  # noqa: ANN001
    fixed_clock(NOON)
    html = SendingView(load(write_config(two_numbers()))).panel(
        [item("first", away("logged_out", "<b>removed</b>")), item("backup", connected(3, "2030-01-01T12:01:00+00:00",
                                                                                       90.0))])
    assert '<tr class="account bad" data-account="first" data-sending="stopped">' in html
    assert "&lt;b&gt;removed&lt;/b&gt;" in html and "<b>removed" not in html
    assert re.search(r'data-account="backup" data-sending="sending"><td>backup</td><td>27710000008</td><td>sending'
                     r'</td><td>-</td><td>-</td><td>3</td><td>1m30s</td><td>12:01:00 UTC</td>', html), html
    assert '<tr class="route warn" data-project="lawley" data-through="backup">' in html
    ends = connected(paused=True, until="2030-01-02T09:30:00+00:00", reason=BAN)["sending"]
    tomorrow = SendingView(load(write_config(two_numbers()))).panel([item("first", away("temporary_ban", BAN, None,
                                                                                        ends))])
    assert "<td>2030-01-02 09:30:00 UTC</td>" in tomorrow  # a ban that ends on another day says which
    assert 'data-project="mohadin" data-through=""' in html  # main: no answer in these items


# -- end to end: a real `wa-watchdog run`, the simulator banning the first number --------------------------------

def system_config() -> str:
    """two_numbers under the watchdog: backup keeps 30 s between messages to one chat, so feedback queues there."""
    backup = f'phone = "{BACKUP}"\napi_port = 0\n{PACE_OFF}'
    text = two_numbers().replace(backup, backup.replace("chat_gap_s = 0", "chat_gap_s = 30"), 1)
    return text.replace("[accounts.main.probe]\ninitial_delay = 1.0", "[accounts.main.probe]\ninitial_delay = 5.0")


def console(system: RunningSystem) -> str:
    url = endpoints.url(system.data_dir, "watchdog", "control")
    with urllib.request.urlopen(f"{url}/", timeout=10) as response:
        return response.read().decode()


def account_cells(page: str, account: str) -> list[str]:
    found = re.search(rf'<tr class="account \w+" data-account="{account}" data-sending="\w+">(.*?)</tr>', page)
    return re.findall(r"<td>(.*?)</td>", found.group(1)) if found else []


def through(page: str, project: str) -> str:
    found = re.search(rf'data-project="{project}" data-through="(\w*)"', page)
    return found.group(1) if found else "?"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_console_and_status_show_a_banned_number_the_queue_and_the_projects_current_sender(
        tmp_path: Path) -> None:
    system = RunningSystem(tmp_path, system_config())
    system.start()
    try:
        system.inject(GROUP_A, CONTRACTOR, "DR1000001 installed")
        wait_until(lambda: account_cells(console(system), "first")[:3] == ["first", FIRST, "sending"]
                   and through(console(system), "lawley") == "first", timeout=30, message="first sending")
        wait_until(lambda: any("DR1000001" in s["text"] for s in system.sent()), timeout=30, message="the first ack")
        limits = {"session": FIRST, "per_minute": 1, "ban_after": 1, "ban_s": 120,
                  "ban_code": "SEND_TO_TOO_MANY_PEOPLE"}
        http("POST", f"{system.sim_url}/sim/limits", limits)
        # one too many: WhatsApp answers rate-overlimit and bans the number; the message waits in first's outbox
        call("POST", f"{endpoints.url(system.data_dir, 'bridge:first')}/api/send",
             {"recipient": GROUP_A, "message": "one too many"}, headers={"Idempotency-Key": "one-too-many"})
        banned = wait_until(lambda: (cells := account_cells(console(system), "first"))[2] == "paused" and cells,
                            timeout=30, message="the console to show first paused")
        assert "temporary ban by WhatsApp (SEND_TO_TOO_MANY_PEOPLE) until" in banned[3]
        assert re.fullmatch(r"\d\d:\d\d:\d\d UTC", banned[4]) and banned[5] == "1", banned  # until; its queue
        for n in (2, 3, 4):
            system.inject(GROUP_A, CONTRACTOR, f"DR100000{n} installed")
        # backup sends the first at once and holds the other two 30 s apart: its queue and when it drains
        queued = wait_until(lambda: (cells := account_cells(console(system), "backup"))[5] == "2" and cells,
                            timeout=30, message="two acks queued in backup's outbox")
        assert queued[2] == "sending" and re.fullmatch(r"\d+s|\dm\d\ds", queued[6]) and queued[7].endswith(" UTC")
        page = console(system)
        assert through(page, "lawley") == "backup" and "first temporary_ban: temporary ban by WhatsApp" in page
        assert through(page, "mohadin") == "main"
        status = cli(system.config_path, "status", "--json")
        assert status.returncode == 0, status.stderr
        sending = json.loads(status.stdout)["sending"]
        first = next(a for a in sending["accounts"] if a["account"] == "first")
        assert (first["sending"], first["queue"]) == ("paused", 1) and "SEND_TO_TOO_MANY_PEOPLE" in first["why"]
        assert next(a for a in sending["accounts"] if a["account"] == "backup")["queue"] == 2
        assert next(p for p in sending["projects"] if p["project"] == "lawley")["through"] == "backup"
        text = cli(system.config_path, "status").stdout
        assert re.search(r"first\s+27710000009\s+paused\s+temporary ban by WhatsApp \(SEND_TO_TOO_MANY_PEOPLE\)", text)
        assert re.search(r"lawley\s+first, backup\s+backup\s+first temporary_ban", text), text
    finally:
        system.stop()
