"""Which followed groups this account is not a member of, as WhatsApp says.

Why the bridge asks: a project that follows a group the number is not in (a
mistyped JID, the number removed from the group) receives nothing, and "no
messages" looks exactly like a quiet group. WhatsApp (neonize's joined groups,
the simulator's membership) is asked after every connect and every `REFRESH`
seconds while connected; `GET /api/health` shows the answer, the monitors and
`wa-watchdog check` read it there and name the project.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable

from loguru import logger

from bridge.transport import NotConnected, Transport
from bridge.config import AccountConfig
from watchdog.components import Config
from bridge.alert_rules import not_in_text
from watchdog.shared.waiting import wait_event

REFRESH = 600.0  # seconds between asks while connected (someone may remove the number from a group)


def followed_groups(config: Config, account: AccountConfig) -> dict[str, list[str]]:
    """Group JID -> the enabled projects that listen for it on this account ([] for a follow_groups entry)."""
    followed: dict[str, list[str]] = {jid: [] for jid in account.follow_groups}
    for project in config.projects:
        if project.enabled and project.listen_account == account.name:
            for jid in project.groups:
                followed.setdefault(jid, []).append(project.name)
    return followed


class Membership:
    def __init__(self, config: Config, account: AccountConfig, transport: Transport) -> None:
        self.account = account.name
        self.transport = transport
        self.followed = followed_groups(config, account)
        self.joined: list[str] | None = None  # None until WhatsApp answered once

    def missing(self) -> list[dict]:
        """The followed groups WhatsApp does not list for this number (nothing known yet: none)."""
        if self.joined is None:
            return []
        joined = set(self.joined)
        return [{"group": jid, "projects": projects} for jid, projects in self.followed.items() if jid not in joined]

    def health(self) -> dict:
        return {"groups": self.joined, "not_in_groups": self.missing()}

    async def refresh(self, connected: Callable[[], bool]) -> None:
        """Ask WhatsApp once (when connected); a lost connection leaves the last answer standing."""
        if not connected():
            return
        try:
            joined = sorted(await self.transport.joined_groups())
        except NotConnected as exc:
            logger.info("group membership not asked: {}", exc)
            return
        before = self.missing() if self.joined is not None else None
        self.joined = joined
        missing = self.missing()
        if missing != before:
            for item in missing:
                logger.warning("{}: its messages never reach this number", not_in_text(self.account, item["group"],
                                                                                     item["projects"]))
            if not missing:
                logger.info("account {} is in all {} followed group(s)", self.account, len(self.followed))

    async def keep_fresh(self, connected: Callable[[], bool], stop: asyncio.Event) -> None:
        while not await wait_event(stop, REFRESH):
            await self.refresh(connected)
