"""Keeps this host's sender lease of one account (a cluster, issue 21): renews it while held, looks for a
takeover while not, and tells the feedback senders when sending rights came or went. On the same connection
and beat it renews this node's row in `cluster_nodes`, alerts on the other nodes' silences and ends the transactions
a node silent for lease_s left open (monitors/store/nodes.py): every process that keeps a lease is a sign of life
of its node.

The statements are blocking (psycopg) and run on a thread of the keeper's own, on its own schedule: a silent
PostgreSQL must not stop the monitor's event loop, and the loop, whatever it is doing, must not delay a takeover
(it is what ends a silent holder's sessions and the locks they keep). The loop only reports what the looks found;
the senders only ask `fence()`, which answers from the holder's monotonic deadline.

The bridges that send under the lease (its account's, and the other `send_accounts` of its projects) are told
after each look (`POST /api/fence`, bridge/fence.py): "token N valid until t" (the holder's own deadline, on
CLOCK_MONOTONIC) while it is held, and "token N lost" once it is not (after each look until the bridge answered:
a bridge restarting, or its standby taking over, must hear it). A keeper starting says "every token before the
lease's newest is lost" once, so what a bridge withdrew before this process started (its predecessor stopped
before giving it back) is given back too. Their outboxes send a fenced row only
while its token is valid, so what they hold is not sent by a host paused past its lease. Each word goes in a
task of its own: a slow bridge never delays a renewal. What a bridge answers it withdrew (rows of a superseded
token, never sent) is given back (`on_withdrawn`): the feedback queued there is pending again, for the holder;
until the drops store takes it (a host that resumes finds its connections ended), again after each look.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress

import aiohttp

from loguru import logger

from monitors.alert_rules import LEASE_TAKEN_OVER, NODE_SILENT
from monitors.bridge_client import BridgeClient, BridgeUnavailable
from monitors.config import ClusterConfig
from monitors.store.fence import Fence
from monitors.store import nodes
from monitors.store.lease import RENEW_FRACTION, TAKE_OVER_EVERY, SenderLease, Takeover
from monitors.store.sql import StoreUnavailable

NODE_BEAT_FRACTION = 0.5  # of lease_s: how often a keeper renews its node's row (node_silent_s is >= 2 × lease_s)
from watchdog.shared.alerts import AlertManager
from monitors.config import DatabaseConfig
from watchdog.components import Config
from watchdog.shared.recovery_log import RecoveryLog

STOP_WAIT_S = 5.0  # how long a stopping monitor waits for the keeper's thread to release the lease
# before, the token held before, now, what it took over, the other nodes' silences
Look = tuple[Fence | None, int | None, Fence | None, Takeover | None, list[tuple[str, float]]]


class LeaseKeeper:
    def __init__(self, database: DatabaseConfig, cluster: ClusterConfig, account: str, component: str,
                 log: RecoveryLog, alerts: AlertManager, on_change: Callable[[], None],
                 config: Config | None = None, bridges: Sequence[str] = (),
                 on_withdrawn: Callable[[list[str], int], bool] = lambda ids, up_to: True,
                 on_doubt: Callable[[list[str]], None] = lambda ids: None) -> None:
        self.lease = SenderLease(database.url, database.schema, account, cluster.node, cluster.lease_s)
        self.config = config
        self.bridges = list(bridges)  # accounts whose bridges send under this lease (told its validity)
        self.on_withdrawn = on_withdrawn  # message ids a bridge withdrew, up to which token: True once given back
        self.on_doubt = on_doubt  # message ids a bridge holds in doubt (its answer lost): found out by the monitors
        self._owed: list[tuple[list[str], int]] = []  # withdrawn, not given back yet
        self._telling: set[asyncio.Task] = set()
        self._unsaid: dict[str, int] = {}  # bridge component -> the lost token it has not acknowledged yet
        self._greeted = False  # the first look said what was lost before this process
        self._hand_over: Callable[[int], None] = lambda token: None  # (run) tells the bridges before a release
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
            silences = nodes.beat(self.lease.db, node, self.silent_after_s, judge, stalled_s=self.lease.lease_s)
        except StoreUnavailable:
            self._seeing_since = None  # the lease's own outage is what the keeper reports
            return []
        self._node_seen_at = now
        return silences

    def keep(self) -> tuple[Fence | None, list[tuple[str, float]]]:
        """One look at the lease, then the node's beat (the lease first: its timing is what fences)."""
        fence = self.lease.keep()
        if not self._greeted and self.bridges and (newest := self.lease.newest_token()) is not None:
            self._greeted = True
            for name in self.bridges:
                if newest > 1:
                    self._unsaid.setdefault(self.config.account(name).component if self.config else name, newest - 1)
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
        handed to `found`; until `stop`, then the lease released so that another host takes over at its next look.
        Only a lease this process ends is "lost" to the bridges: one its node's other processes keep is not (a
        restarting monitor must not make the bridges withdraw what its siblings queued under it). And they hear it
        before the release: once released, the other host may take the lease at once, and a bridge that had not
        heard yet would send what it holds under the old token after the new grant."""
        try:
            while True:
                before, held = self.lease.fence(), self.lease.token
                now, silences = self.keep()
                found((before, held, now, self.lease.takeover if now is not None else None, silences))
                if stop.wait(self.lease.lease_s * RENEW_FRACTION if now else TAKE_OVER_EVERY):
                    return
        finally:
            token, told = self.lease.token, False
            if token is not None and self.lease.alone():
                self._hand_over(token)
                told = True
            if self.lease.release() and not told:  # a sibling stopping at once left it to this one: told after
                self._hand_over(token)  # type: ignore[arg-type]
            self.lease.close()

    async def run(self, stopping: asyncio.Event) -> None:
        """Report the thread's looks and tell the bridges until `stopping` (or cancelled); then stop the thread,
        which tells the bridges that what they hold under the lease is the next holder's, then releases it."""
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
        async with aiohttp.ClientSession() as http:
            bridges = [BridgeClient(self.config, name, http) for name in self.bridges] if self.config else []

            def hand_over(token: int) -> None:  # on the keeper's thread, while this loop awaits its end
                try:
                    told = asyncio.run_coroutine_threadsafe(self._lost(bridges, token), loop)
                except RuntimeError:  # the loop closed: the process is on its way out, its keeper's words void
                    return
                with suppress(concurrent.futures.TimeoutError):  # a bridge not answering: released all the same
                    told.result(timeout=self.lease.lease_s)
            self._hand_over = hand_over
            try:
                while not stopping.is_set():
                    before, held, now, took, silences = await looks.get()
                    self._report(before, now, took)
                    self._report_silences(silences)
                    self._tell(bridges, held, now)
                    self._give_back()
            finally:
                stop.set()
                await asyncio.to_thread(thread.join, STOP_WAIT_S)

    async def _lost(self, bridges: list[BridgeClient], token: int) -> None:
        """Tell the bridges `token` is lost and wait for their answers: what they held under it is withdrawn, and
        given back (pending) for the next holder."""
        self._tell(bridges, token, None)
        await asyncio.gather(*self._telling, return_exceptions=True)

    def _tell(self, bridges: list[BridgeClient], held: int | None, now: Fence | None) -> None:
        """Tell the bridges the lease's validity after a look (`held`: the token held before it; `now`: after)."""
        lease = self.lease
        for bridge in bridges:
            if held is not None and (now is None or now.token != held):
                self._unsaid[bridge.component] = max(held, self._unsaid.get(bridge.component, 0))
            words: list[tuple[Fence, float | None]] = []
            if (lost := self._unsaid.get(bridge.component)) is not None:
                words.append((Fence(lease.account, lease.node, lost), None))
            if now is not None:
                words.append((now, lease.valid_until))
            for fence, until in words:
                task = asyncio.ensure_future(self._say(bridge, fence, until))
                self._telling.add(task)
                task.add_done_callback(self._telling.discard)

    async def _say(self, bridge: BridgeClient, fence: Fence, until: float | None) -> None:
        try:
            answer = await bridge.fence(fence, until, timeout=self.lease.lease_s)
        except BridgeUnavailable as exc:  # it learns at the next word; its fenced rows wait meanwhile
            logger.debug("sender lease of {}: cannot tell {}: {}", fence.account, bridge.component, exc)
            return
        if until is None and self._unsaid.get(bridge.component) == fence.token:
            del self._unsaid[bridge.component]
        withdrawn = [str(i) for i in answer.get("withdrawn") or ()]
        if withdrawn:
            up_to = fence.token if until is None else fence.token - 1
            logger.warning("sender lease of {}: {} withdrew {} send(s) of token {} or older, given back to the "
                           "lease's holder", fence.account, bridge.component, len(withdrawn), up_to)
            self._owed.append((withdrawn, up_to))
            self._give_back()
        if doubt := [str(i) for i in answer.get("doubt") or ()]:  # said at every word: taking them is idempotent
            self.on_doubt(doubt)

    def _give_back(self) -> None:
        self._owed = [owed for owed in self._owed if not self.on_withdrawn(*owed)]
