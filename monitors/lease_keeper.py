"""Keeps this host's sender lease of one account (a cluster, issue 21): renews it while held, looks for a
takeover while not, and tells the feedback senders when sending rights came or went. On the same connection
and beat it renews this node's row in `cluster_nodes` and alerts on the other nodes' silences
(monitors/store/nodes.py): every process that keeps a lease is a sign of life of its node.

The statements are blocking (psycopg) and run on a thread of the keeper's own, on its own schedule: a silent
PostgreSQL must not stop the monitor's event loop, and the loop, whatever it is doing, must not delay a takeover
(it is what ends a silent holder's sessions and the locks they keep). The loop only reports what the looks found;
the senders only ask `fence()`, which answers from the holder's monotonic deadline.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from loguru import logger

from monitors.alert_rules import LEASE_TAKEN_OVER, NODE_SILENT
from monitors.config import ClusterConfig
from monitors.store.fence import Fence
from monitors.store import nodes
from monitors.store.lease import RENEW_FRACTION, TAKE_OVER_EVERY, SenderLease, Takeover
from monitors.store.sql import StoreUnavailable

NODE_BEAT_FRACTION = 0.5  # of lease_s: how often a keeper renews its node's row (node_silent_s is >= 2 × lease_s)
from watchdog.shared.alerts import AlertManager
from monitors.config import DatabaseConfig
from watchdog.shared.recovery_log import RecoveryLog

STOP_WAIT_S = 5.0  # how long a stopping monitor waits for the keeper's thread to release the lease
Look = tuple[Fence | None, Fence | None, Takeover | None, list[tuple[str, float]]]  # before, now, what, silences


class LeaseKeeper:
    def __init__(self, database: DatabaseConfig, cluster: ClusterConfig, account: str, component: str,
                 log: RecoveryLog, alerts: AlertManager, on_change: Callable[[], None]) -> None:
        self.lease = SenderLease(database.url, database.schema, account, cluster.node, cluster.lease_s)
        self.component = component
        self.log = log
        self.alerts = alerts
        self.on_change = on_change
        self.silent_after_s = cluster.silent_after_s
        self._node_seen_at = -float("inf")  # monotonic: the last renewal of the node's row
        self._seeing_since: float | None = None  # monotonic: since when this process's beats came through unbroken

    def fence(self) -> Fence | None:
        return self.lease.fence()

    def _node_beat(self) -> list[tuple[str, float]]:
        """Renew this node's row; the other nodes' silences this node is first to see (blocking: in the thread)."""
        every = self.lease.lease_s * NODE_BEAT_FRACTION
        node, now = self.lease.node, time.monotonic()
        if now - self._node_seen_at < every:
            return []
        if self._seeing_since is None or now - self._node_seen_at > every + self.lease.lease_s:
            self._seeing_since = now  # started, or back from an outage or a pause of its own
        # Only a node that has itself been seen all along may judge another silent: after an outage of
        # PostgreSQL every node's row is old, and the first one back must not alert on the others.
        judge = now - self._seeing_since >= self.silent_after_s
        try:
            silences = nodes.beat(self.lease.db, node, self.silent_after_s, judge)
        except StoreUnavailable:
            self._seeing_since = None  # the lease's own outage is what the keeper reports
            return []
        self._node_seen_at = now
        return silences

    def keep(self) -> tuple[Fence | None, list[tuple[str, float]]]:
        """One look at the lease, then the node's beat (the lease first: its timing is what fences)."""
        fence = self.lease.keep()
        return fence, self._node_beat()

    def _report_silences(self, silences: list[tuple[str, float]]) -> None:
        node = self.lease.node
        for silent, ago in silences:
            summary = f"cluster node {silent} not seen for {ago:.0f} s (seen by {node})"
            logger.warning(summary)
            self.log.append(self.component, "node_silent", node=silent, seen_by=node, silent_s=round(ago, 1))
            self.alerts.fire(NODE_SILENT, f"node:{silent}", summary)

    def _report(self, before: Fence | None, now: Fence | None, took: Takeover | None) -> None:
        if before == now or (before is not None and now is not None and before.token == now.token):
            return
        lease = self.lease
        if before is not None:
            logger.warning("sender lease of {} lost by {} (token {})", lease.account, lease.node, before.token)
            self.log.append(self.component, "lease", change="lost", account=lease.account, node=lease.node,
                            token=before.token)
        if now is not None and took is not None:
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

    def _keep_looking(self, found: Callable[[Look], None], stop: threading.Event) -> None:
        """The keeper's thread: a look every RENEW_FRACTION × lease_s while held, TAKE_OVER_EVERY while not, each
        handed to `found`; until `stop`, then the lease released so that another host takes over at its next look."""
        try:
            while True:
                before = self.lease.fence()
                now, silences = self.keep()
                found((before, now, self.lease.takeover if now is not None else None, silences))
                if stop.wait(self.lease.lease_s * RENEW_FRACTION if now else TAKE_OVER_EVERY):
                    return
        finally:
            self.lease.release()
            self.lease.close()

    async def run(self, stopping: asyncio.Event) -> None:
        """Report the thread's looks until `stopping` (or cancelled); then stop the thread, which releases the lease."""
        loop = asyncio.get_running_loop()
        looks: asyncio.Queue[Look] = asyncio.Queue()

        def found(look: Look) -> None:
            try:
                loop.call_soon_threadsafe(looks.put_nowait, look)
            except RuntimeError:  # the loop closed: the process is on its way out
                pass

        stop = threading.Event()
        thread = threading.Thread(target=self._keep_looking, args=(found, stop), daemon=True,
                                  name=f"lease {self.lease.account}")
        thread.start()
        try:
            while not stopping.is_set():
                before, now, took, silences = await looks.get()
                self._report(before, now, took)
                self._report_silences(silences)
        finally:
            stop.set()
            await asyncio.to_thread(thread.join, STOP_WAIT_S)
