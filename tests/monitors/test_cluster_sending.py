"""A host in a cluster (`[cluster]`, issue 21) sends feedback only under the account's sender lease: while
another node holds it, drops are recorded and nothing is sent; once it is free, each acknowledgement once.
Its drops-api delivers webhooks under a lease of their own, which it holds meanwhile."""
from __future__ import annotations

import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from bridge.schema import now_ts
from monitors.store.fence import WEBHOOKS
from monitors.store.lease import SenderLease, lease_states
from monitors.store.postgres import PostgresBackend
from scripts.benchmarks.system_run import CONTRACTORS, RunningSystem, config_text, group_jid
from scripts.benchmarks.webhook_receiver import WebhookReceiver
from tests.monitors.test_webhooks import SECRET
from tests.conftest import wait_until
from watchdog.shared import endpoints


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_node_sends_only_under_the_sender_lease(tmp_path: Path, pg_url: str) -> None:
    other = SenderLease(pg_url, "wa_watchdog", "main", "vps-b", lease_s=120)  # a live node holding it
    assert other.acquire() == 1
    receiver = WebhookReceiver(SECRET)
    receiver.start()
    config = (config_text(1, database_url=pg_url) + '\n[cluster]\nnode = "vps-a"\nlease_s = 2\n'
              f'\n[drops_api]\nenabled = true\n\n[[webhooks]]\nname = "qa"\nurl = "{receiver.url}"\n'
              f'secret = "{SECRET}"\n')
    system = RunningSystem(tmp_path, config, database_url=pg_url)
    system.start()
    posted = [f"DR{7100000 + n}" for n in range(5)]
    try:
        for n, drop in enumerate(posted[:3]):
            system.inject(group_jid(1), CONTRACTORS[n % len(CONTRACTORS)], f"{drop} installed")
        wait_until(lambda: system.query("drops", "SELECT COUNT(*) FROM feedback WHERE status = 'pending'")
                   == [(3,)], timeout=30, message="three drops recorded, their acknowledgements pending")
        wait_until(lambda: looked_for_the_lease(other), timeout=30, message="vps-a's monitor to ask for the lease")
        assert system.sent() == []
        assert system.query("drops", "SELECT COUNT(*) FROM feedback WHERE claimed_by IS NOT NULL") == [(0,)]
        released_at = now_ts()  # the product's clock, as the monitor stamps sent_at
        other.release()  # vps-b stops cleanly: vps-a takes over at its next look
        for n, drop in enumerate(posted[3:], start=3):
            system.inject(group_jid(1), CONTRACTORS[n % len(CONTRACTORS)], f"{drop} installed")
        wait_until(lambda: system.query("drops", "SELECT COUNT(*) FROM feedback WHERE status = 'sent'") == [(5,)],
                   timeout=30, message="every acknowledgement sent once vps-a holds the lease")
        assert Counter(s["text"].split()[1] for s in system.sent()) == Counter(posted)  # each exactly once
        # claimed only under vps-a's grant (token 2, after vps-b's 1 was released), and sent only after that
        assert system.query("drops", "SELECT DISTINCT claimed_by, claim_token FROM feedback") == [("vps-a", 2)]
        assert min(t for (t,) in system.query("drops", "SELECT sent_at FROM feedback")) >= released_at
        states = {state.account: state for state in lease_states(other.db)}
        assert (states["main"].holder, states["main"].token, states["main"].valid) == ("vps-a", 2, True)
        assert (states[WEBHOOKS].holder, states[WEBHOOKS].valid) == ("vps-a", True)
        wait_until(lambda: sorted(e["data"]["drop"]["drop_number"] for e in receiver.events().values()
                                  if e["type"] == "drop.recorded") == posted, timeout=30,
                   message="a drop.recorded webhook for every drop, from the holder of the webhooks lease")
        with urllib.request.urlopen(f"{endpoints.url(system.data_dir, 'drops-api')}/metrics", timeout=10) as answer:
            metrics = answer.read().decode()
        assert 'wa_watchdog_lease_token{account="main",holder="vps-a"} 2.0' in metrics
        assert 'wa_watchdog_lease_valid{account=":webhooks",holder="vps-a"} 1.0' in metrics
        assert 'wa_watchdog_cluster_node_seen_age_seconds{node="vps-a"}' in metrics  # vps-a's keepers renew it
    finally:
        system.stop()
        other.close()
        receiver.close()
    reader = PostgresBackend(pg_url, "wa_watchdog")
    states = lease_states(reader)
    reader.close()
    assert [s.valid for s in states] == [False, False]  # released at the clean stop: another host takes over at once


def looked_for_the_lease(lease: SenderLease) -> bool:
    """vps-a's lease session has asked for the lease (and, vps-b holding it, was refused)."""
    return bool(lease.db.rows("SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'wa-watchdog lease vps-a %' "
                              "AND query LIKE '%INSERT INTO sender_leases%'"))
