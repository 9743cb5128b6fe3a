"""Keeps this host's sender lease of one account (a cluster, issue 21): renews it while held, looks for a
takeover while not, and tells the feedback senders when sending rights came or went.

The statements are blocking (psycopg) and run in a thread: a silent PostgreSQL must not stop the monitor's
loop, and the senders only ask `fence()`, which answers from the holder's monotonic deadline.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable

from loguru import logger

from monitors.alert_rules import LEASE_TAKEN_OVER
from monitors.config import ClusterConfig
from monitors.store.fence import Fence
from monitors.store.lease import RENEW_FRACTION, TAKE_OVER_EVERY, SenderLease
from watchdog.shared.alerts import AlertManager
from monitors.config import DatabaseConfig
from watchdog.shared.recovery_log import RecoveryLog
from watchdog.shared.waiting import wait_event


class LeaseKeeper:
    def __init__(self, database: DatabaseConfig, cluster: ClusterConfig, account: str, component: str,
                 log: RecoveryLog, alerts: AlertManager, on_change: Callable[[], None]) -> None:
        self.lease = SenderLease(database.url, database.schema, account, cluster.node, cluster.lease_s)
        self.component = component
        self.log = log
        self.alerts = alerts
        self.on_change = on_change

    def fence(self) -> Fence | None:
        return self.lease.fence()

    def _report(self, before: Fence | None, now: Fence | None) -> None:
        if before == now or (before is not None and now is not None and before.token == now.token):
            return
        lease = self.lease
        if before is not None:
            logger.warning("sender lease of {} lost by {} (token {})", lease.account, lease.node, before.token)
            self.log.append(self.component, "lease", change="lost", account=lease.account, node=lease.node,
                            token=before.token)
        if now is not None and (took := lease.takeover) is not None:
            summary = (f"{lease.node} took over the sender lease of {lease.account} from {took.holder} (token "
                       f"{now.token}), silent for {took.silent_s:.1f} s")
            logger.warning(summary)
            self.log.append(self.component, "lease", change="taken_over", account=lease.account, node=lease.node,
                            token=now.token, previous=took.holder, gap_s=round(took.silent_s, 3))
            self.alerts.fire(LEASE_TAKEN_OVER, self.component, summary)
        elif now is not None:
            logger.info("sender lease of {} held by {} (token {})", lease.account, lease.node, now.token)
            self.log.append(self.component, "lease", change="acquired", account=lease.account, node=lease.node,
                            token=now.token)
        self.on_change()

    async def run(self, stopping: asyncio.Event) -> None:
        """Until `stopping`; then release the lease so that another host takes over at its next look."""
        try:
            while True:
                before = self.lease.fence()
                now = await asyncio.to_thread(self.lease.keep)
                self._report(before, now)
                every = self.lease.lease_s * RENEW_FRACTION if now else TAKE_OVER_EVERY
                if await wait_event(stopping, every):
                    return
        finally:
            self.lease.release()
            self.lease.close()
