"""A monitor process's projects that follow a group their account is not in: said, not silent.

The bridge asks WhatsApp which groups its number is in (bridge/membership.py)
and shows them in `GET /api/health`. A project following a group outside that
list records nothing, for ever, and looks healthy: so each project's status
line says `account main is not in group … (project velo-test)` (shown by
`wa-watchdog status` and the console), the monitor logs it, and the alert rule
`not_in_group` fires for the project's component (resolved once it is in).
"""
from __future__ import annotations

import asyncio

import aiohttp
from loguru import logger

from bridge.alert_rules import NOT_IN_GROUP as RULE, not_in_text
from monitors.feedback import BridgeClient, BridgeUnavailable
from monitors.project import ProjectMonitor
from watchdog.components import Config
from watchdog.shared.alerts import AlertManager
from watchdog.shared.waiting import wait_event

# Seconds between looks once the bridge has answered (it asks WhatsApp every 10 minutes); while it has not
# (starting, WhatsApp away) from 1 s doubling to 30 s: a hundred monitors must not poll a bridge that is down.
PERIOD = 300.0
UNKNOWN_FIRST, UNKNOWN_MAX = 1.0, 30.0


class GroupWatch:
    def __init__(self, config: Config, monitors: list[ProjectMonitor], alerts: AlertManager,
                 changed: asyncio.Event) -> None:
        self.config = config
        self.monitors = monitors
        self.alerts = alerts
        self.changed = changed
        self.not_in: dict[str, list[str]] = {monitor.project.name: [] for monitor in monitors}

    def problem(self, monitor: ProjectMonitor) -> str:
        """'' or `account main is not in group X (project velo-test)` (one clause per group)."""
        return "; ".join(not_in_text(monitor.account.name, group, [monitor.project.name])
                         for group in self.not_in[monitor.project.name])

    def status_line(self, monitor: ProjectMonitor) -> str:
        problem = self.problem(monitor)
        return monitor.status_line() + (f" · unhealthy: {problem}: nothing from it is recorded" if problem else "")

    async def run(self, stopping: asyncio.Event) -> None:
        async with aiohttp.ClientSession() as http:
            bridges = {name: BridgeClient(self.config, name, http)
                       for name in dict.fromkeys(monitor.account.name for monitor in self.monitors)}
            unknown = UNKNOWN_FIRST
            while True:
                known = [await self._look(name, client) for name, client in bridges.items()]
                if await wait_event(stopping, PERIOD if all(known) else unknown):
                    return
                unknown = UNKNOWN_FIRST if all(known) else min(unknown * 2, UNKNOWN_MAX)

    async def _look(self, account: str, bridge: BridgeClient) -> bool:
        """Compare the account's projects with the groups WhatsApp listed; False while that is not known."""
        try:
            groups = (await bridge.health()).get("groups")
        except BridgeUnavailable:
            return False
        if not isinstance(groups, list):
            return False
        for monitor in self.monitors:
            if monitor.account.name == account:
                self._set(monitor, [group for group in monitor.project.groups if group not in groups])
        return True

    def _set(self, monitor: ProjectMonitor, missing: list[str]) -> None:
        name = monitor.project.name
        if missing == self.not_in[name]:
            return
        self.not_in[name] = missing
        self.changed.set()
        if missing:
            problem = self.problem(monitor)
            logger.error("monitor {}: {}: nothing from it is recorded", name, problem)
            self.alerts.fire(RULE, monitor.component, problem)
        else:
            logger.info("monitor {}: account {} is in every group of the project", name, monitor.account.name)
            self.alerts.resolve(RULE, monitor.component,
                                f"account {monitor.account.name} is in every group of project {name} now")
