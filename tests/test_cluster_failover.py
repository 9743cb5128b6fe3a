"""A second number in a cluster (issues 21 × 22): two hosts, one simulator, one PostgreSQL, and projects whose
feedback may go through either of two numbers.

p1 sends through `first`, then `backup` (`send_accounts`); p2 sends through `backup` alone. One number is sent
through by one host at a time, so a sending number is never paced twice nor sent from two devices at once: the
lease that fences a project's feedback covers every number the project may send through (and so every project
those numbers serve). A holds it; A's p2 monitor is restarted, and A's p1 keeps the lease they share (a clean stop
of one of the node's processes hands nothing over, so the other host never gets `backup` while A's p1 may fail over
to it); then `first` is banned half way through a stream of drops. Every acknowledgement reaches its group exactly once, p1's through
`backup` once the ban is seen, and each from the host that claimed it under its lease's token.
"""
from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import pytest

from monitors.store.lease import lease_states
from monitors.store.postgres import PostgresBackend
from scripts.benchmarks.cluster_run import Poster, two_hosts
from scripts.benchmarks.system_run import (CONTRACTORS, PACE_OFF, ROOT, SOURCE_TREE, RunningSystem, group_jid,
                                           http)
from tests.conftest import wait_until

FIRST, BACKUP = "27710000009", "27710000008"  # main (27710000000) listens: a ban must not stop ingest
LEASE_S = 2.0


def two_numbers(text: str) -> str:
    """p1 through first then backup, p2 through backup; main listens for both. Each number in every group (the
    simulator puts a number no group lists in all of them)."""
    text = text.replace('name = "p1"\n', 'name = "p1"\nlisten_account = "main"\nsend_accounts = ["first", "backup"]\n')
    text = text.replace('name = "p2"\n', 'name = "p2"\nlisten_account = "main"\nsend_account = "backup"\n')
    text = text.replace('feedback = { ack = "message", coalesce_s = 0 }',
                        'feedback = { ack = "message", coalesce_s = 0, failover_after_s = 3 }')
    accounts = "".join(f'\n[accounts.{name}]\ntransport = "sim"\nphone = "{phone}"\napi_port = 0\nstandby = false\n'
                       f'send_pause_s = 1.0\n{PACE_OFF}\n' for name, phone in (("first", FIRST), ("backup", BACKUP)))
    return text.replace("\n[[projects]]", accounts + "\n[[projects]]", 1)


class TwoGroups(Poster):
    """Drops alternately into p1's and p2's group; `groups[drop]` says which."""

    def __init__(self, system: RunningSystem) -> None:
        super().__init__(system)
        self.groups: dict[str, int] = {}

    def post(self, count: int) -> None:
        for _ in range(count):
            n = len(self.posted)
            group = 1 + n % 2
            self.system.inject(group_jid(group), CONTRACTORS[n % len(CONTRACTORS)], f"DR{7300000 + n} installed")
            self.posted.append(f"DR{7300000 + n}")
            self.groups[self.posted[-1]] = group


def acks(system: RunningSystem) -> list[dict]:
    """Every acknowledgement WhatsApp took: its drop, group, number and device (node)."""
    return [{"drop": s["text"].split()[1], "group": s["recipient"], "phone": s["session"], "node": s["node"]}
            for s in system.sent() if "received" in s["text"]]


def leases(pg_url: str) -> list:
    reader = PostgresBackend(pg_url, "wa_watchdog")
    try:
        return lease_states(reader)
    finally:
        reader.close()


def state_of(system: RunningSystem, component: str) -> str:
    item = next((c for c in system.status() if c["name"] == component), None)
    return str(((item or {}).get("connection") or {}).get("state"))


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_banned_number_in_a_cluster_fails_over_under_one_lease_and_every_ack_goes_once(tmp_path: Path,
                                                                                          pg_url: str) -> None:
    a, b = two_hosts(tmp_path, pg_url, LEASE_S, projects=2, edit=two_numbers)
    poster = TwoGroups(a)
    try:
        poster.post(4)
        wait_until(lambda: len(acks(a)) == 4, timeout=60, message="the first acknowledgements")
        # A's p2 monitor restarted: A's p1 keeps the grant they share, and the restarted p2 joins it again
        [before] = leases(pg_url)
        pid = a.pid("monitor:p2")
        restarted = subprocess.run([*SOURCE_TREE, "restart", "--config", str(a.config_path), "monitor:p2"],
                                   cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert restarted.returncode == 0, restarted.stderr
        wait_until(lambda: a.pid("monitor:p2") not in (None, pid) and a.all_healthy(), timeout=30,
                   message="A's p2 monitor back")
        [after] = leases(pg_url)
        assert (after.account, after.holder, after.token) == ("first", "vps-a", before.token), after
        resumed = len(acks(a))
        poster.post(6)
        wait_until(lambda: len(acks(a)) == 10, timeout=60, message="the acknowledgements before the ban")
        limits = {"session": FIRST, "per_minute": 1, "ban_after": 1, "ban_s": 20, "ban_code": "SEND_TO_TOO_MANY_PEOPLE"}
        http("POST", f"{a.sim_url}/sim/limits", limits)  # first's next send is one too many: banned
        banned_from = len(poster.posted)
        poster.post(2)
        wait_until(lambda: "temporary_ban" in (state_of(a, "bridge:first"), state_of(b, "bridge:first")), timeout=30,
                   message="first banned")
        seen = len(poster.posted)
        http("POST", f"{a.sim_url}/sim/limits", {"session": FIRST})  # the ban runs out by itself
        poster.post(10)
        wait_until(lambda: Counter(ack["drop"] for ack in acks(a)) == Counter(poster.posted), timeout=90,
                   message="every drop acknowledged")
        sent = acks(a)
        assert all(ack["group"] == group_jid(poster.groups[ack["drop"]]) for ack in sent)  # each in its own group
        by_drop = {ack["drop"]: ack for ack in sent}
        after_ban = [d for d in poster.posted[seen:] if poster.groups[d] == 1]
        assert {by_drop[d]["phone"] for d in after_ban} == {BACKUP}, "p1's acks after the ban went through backup"
        assert any(by_drop[d]["phone"] == FIRST for d in poster.posted[:banned_from] if poster.groups[d] == 1)
        # one host per number: a number is never sent through from two devices (nor paced twice) at once
        nodes = {}
        for ack in sent[resumed:]:
            nodes.setdefault(ack["phone"], set()).add(ack["node"])
        assert all(len(found) == 1 for found in nodes.values()), f"numbers sent through by two hosts: {nodes}"
        # each acknowledgement went out from the host that claimed its row under its grant
        claims = dict(a.query("drops", "SELECT d.drop_number, f.claimed_by FROM feedback f JOIN drops d "
                                       "ON d.id = f.drop_id WHERE f.kind = 'ack'"))
        assert {d: ack["node"] for d, ack in by_drop.items()} == claims
        assert a.query("drops", "SELECT COUNT(*) FROM feedback WHERE status NOT IN ('sent', 'queued')") == [(0,)]
        held = {lease.account: (lease.holder, lease.token) for lease in leases(pg_url) if lease.valid}
        assert held == {"first": ("vps-a", before.token)}  # one lease for first, backup and p1 and p2, never moved
        assert set(claims.values()) == {"vps-a"}
    finally:
        b.stop()
        a.stop()
