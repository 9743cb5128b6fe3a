"""A project's feedback through the first of its `send_accounts` that can send: a second number takes over.

A number that is banned for a while (`temporary_ban`), logged out, replaced by
another client, or whose bridge has been disconnected or unreachable (not
running, not paired: it exits 4) for longer than `feedback.failover_after_s`,
or whose sending WhatsApp paused (rate-overlimit) for longer than that, cannot send: its outbox would only hold the acknowledgements until it is back,
for hours or days. So before each post the accounts ahead of and including the
one sending now are asked for their state (`GET /api/health`), and the first
that can send gets the post. A short disconnect does not move sending (the
bridge's outbox sends on reconnect), and when the first account can send again
sending returns to it. Each change is a recovery-log line naming its cause,
and the rule `feedback_failover` fires once when sending leaves the first
account and is resolved when it returns.

A failover also takes back what the old number's outbox still holds: the
project's queued feedback is withdrawn from that bridge (`POST /api/withdraw`:
only sends not yet handed to WhatsApp, so never one that may still go out) and
is pending again, to go out through the account that sends now; what the bridge
does not withdraw (sending at that moment, sent) stays queued, and its receipt
marks it sent. A coalesced message is withdrawn by its own key, with every row
it carries.

Nothing here opens a WhatsApp session: each account's own bridge, owning its
session, sends; a failover only picks which bridge to ask. Mentions and quotes
work from any number that is in the group (monitors/group_watch.py and `check`
say when one is not).
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import datetime

import aiohttp
from loguru import logger

from monitors.alert_rules import FEEDBACK_FAILOVER
from monitors.bridge_client import Answer, BridgeClient, BridgeUnavailable
from monitors.config import ProjectConfig
from monitors.drops_store import DropsDB, Feedback, Fence, StoreUnavailable
from monitors.feedback import Held, queued_messages
from watchdog.components import Config
from watchdog.shared import clock
from watchdog.shared.alerts import AlertManager
from watchdog.shared.recovery_log import RecoveryLog

CONNECTED = "connected"
CANNOT_SEND = ("temporary_ban", "logged_out", "stream_replaced")  # bridge/health.py: not soon, not by itself
LOOK_S = 1.0  # feedback queued in a bridge, another account to go to: its number's state looked at this often


def why_not(name: str, health: dict, away_s: float, failover_after_s: float) -> str:
    """Why account `name` cannot send now ('' if it can, or is only briefly away), from its bridge's health answer
    (`state`, `reason`, `sending`) and how long it has not been connected. The rule of `Senders` (each post) and of
    the console's sending panel (monitors/sending_panel.py)."""
    state, reason = str(health.get("state", "?")), str(health.get("reason") or "")
    if state == CONNECTED:
        return _paused(name, health.get("sending"), failover_after_s)
    if state in CANNOT_SEND:
        return f"{name} {state}" + (f": {reason}" if reason else "")
    if away_s < failover_after_s:
        return ""
    return f"{name} {state} for {away_s:.0f} s" + (f": {reason}" if reason else "")


def _paused(name: str, sending: object, failover_after_s: float) -> str:
    """A connected account whose sending WhatsApp paused (rate-overlimit) for longer than failover_after_s from now
    cannot send (a shorter pause: its outbox sends when it ends)."""
    if not isinstance(sending, dict) or not sending.get("paused") or not isinstance(sending.get("until"), str):
        return ""
    try:
        left = (datetime.fromisoformat(sending["until"]) - clock.now()).total_seconds()
    except (TypeError, ValueError):
        return ""
    if left <= failover_after_s:
        return ""
    return f"{name} sending paused until {sending['until']}: {sending.get('reason', '')}"


HEALTH_TIMEOUT_S = 2.0  # a look at the sending bridge's health for a send in doubt: a quick local answer, or none


class Senders:
    """Posts a project's feedback through its first account that can send; duck-types BridgeClient.post."""

    def __init__(self, config: Config, project: ProjectConfig, http: aiohttp.ClientSession,
                 log: RecoveryLog | None = None, alerts: AlertManager | None = None,
                 changed: Callable[[], None] = lambda: None, drops: DropsDB | None = None,
                 held: Held | None = None) -> None:
        self.project = project
        self.component = project.component
        self.names = project.send_accounts or [project.send_account]  # as the config check resolved them
        self.clients = [BridgeClient(config, name, http) for name in self.names]
        self.log = log
        self.alerts = alerts
        self.changed = changed
        self.drops = drops  # where queued feedback is taken back from on a failover (None: not taken back)
        self.held = held
        self.active = 0  # index of the account sending now
        self.cause = ""  # why the accounts before it cannot send ('' while the first sends)
        self._down_since: dict[str, float] = {}  # account -> when it was first seen not connected (monotonic)

    @property
    def account(self) -> str:
        return self.names[self.active]

    async def health(self) -> dict | None:
        """The sending account's `GET /api/health` answer now; None when its bridge gives none within
        HEALTH_TIMEOUT_S: a send in doubt is judged on it (monitors/fate.py), and a frozen bridge must not hold each
        look for a send's 10 s (unknown_after_s would be decided several times too late)."""
        try:
            return await asyncio.wait_for(self.clients[self.active].health(), HEALTH_TIMEOUT_S)
        except (BridgeUnavailable, asyncio.TimeoutError):
            return None

    async def cannot_send(self, index: int) -> str:
        """Why account `index` cannot send now ('' if it can, or is only briefly away)."""
        client, name = self.clients[index], self.names[index]
        try:
            body = await client.health()
        except BridgeUnavailable as exc:
            body = {"state": "unreachable", "reason": str(exc)}
        away = 0.0
        if body.get("state") == CONNECTED:
            self._down_since.pop(name, None)
        else:
            away = time.monotonic() - self._down_since.setdefault(name, time.monotonic())
        return why_not(name, body, away, self.project.feedback.failover_after_s)

    async def choose(self) -> BridgeClient:
        """The first account that can send (the one sending now when none can: its outbox keeps the post)."""
        if len(self.clients) == 1:
            return self.clients[0]
        causes = []
        for index in range(len(self.clients)):
            cause = await self.cannot_send(index)
            if not cause:
                was = self.active
                self._move(index, "; ".join(causes))
                if index > was:  # the account before cannot send: what its outbox holds goes through this one
                    await self.take_back(self.clients[was])
                break
            causes.append(cause)
        else:
            logger.warning("feedback for {}: no sending account can send ({}); staying with {}", self.project.name,
                           "; ".join(causes), self.account)
        return self.clients[self.active]

    def _move(self, index: int, cause: str) -> None:
        if index == self.active:
            return
        was, self.active, self.cause = self.account, index, cause
        self.changed()
        if index == 0:
            message = f"feedback of project {self.project.name} back to {self.account} (was {was})"
            cause = f"{self.account} can send again"
        else:
            message = f"feedback of project {self.project.name} now through {self.account} (was {was})"
        logger.warning("{}: {}", message, cause)
        if self.log is not None:
            self.log.append(self.component, "failover" if index else "failback", cause=cause, message=message,
                            project=self.project.name, account=self.account, previous=was)
        if self.alerts is not None:
            if index:
                self.alerts.fire(FEEDBACK_FAILOVER, self.component, f"{message}: {cause}")
            else:
                self.alerts.resolve(FEEDBACK_FAILOVER, self.component, message)

    def watching(self) -> bool:
        """Feedback queued in a bridge, and another account to go to: the sending one's state is to be looked at
        though nothing new is posted (coalescing may post nothing for a minute)."""
        return len(self.clients) > 1 and self.drops is not None and \
            bool(self.drops.queued_feedback(self.project.name, 1))

    async def look_after_queued(self) -> None:
        """While `watching`, look whether the sending account can still send (each wake-up of the sender, at least
        every LOOK_S): a ban seen moves sending, and takes the queued feedback back, though nothing new is posted."""
        if self.watching():
            await self.choose()

    async def take_back(self, client: BridgeClient) -> list[int]:
        """Withdraw the project's queued feedback from `client`'s bridge and make it pending again (the ids): a
        banned number's outbox would hold it for hours. Best effort: a bridge that does not answer keeps it."""
        if self.drops is None:
            return []
        try:
            queued = self.drops.queued_feedback(self.project.name)
            messages = queued_messages(self.drops, self.project, queued)
            if not messages:
                return []
            states = await client.withdraw(list(messages))
            fence: Fence | None = self.held() if self.held else None
            if self.held is not None and fence is None:
                return []  # no longer this host's to send: the holder takes it over
            back = [row for key, rows in messages.items() if states.get(key) == "withdrawn" for row in rows]
            done = self.drops.requeue_feedback(back, fence)
        except (BridgeUnavailable, StoreUnavailable) as exc:
            logger.warning("feedback of project {}: cannot take back what {} holds: {}", self.project.name,
                           client.component, exc)
            return []
        logger.warning("feedback of project {}: took back {} queued feedback from {} (of {} asked)",
                       self.project.name, len(done), client.component, len(queued))
        if self.log is not None and done:
            self.log.append(self.component, "feedback_taken_back", project=self.project.name, account=client.component,
                            feedback=len(done), message=f"{len(done)} queued feedback withdrawn from {client.component}")
        return done

    async def post(self, feedback: Feedback, ack: str = "message", target: str = "",
                   fence: Fence | None = None) -> Answer:
        return await (await self.choose()).post(feedback, ack, target, fence)

    async def withdraw(self, keys: Sequence[str]) -> dict[str, str]:
        """Take back queued sends from the bridge of the account sending now (what another account's bridge holds
        is that account's: it answers unknown here, and stays)."""
        return await (await self.choose()).withdraw(keys)
