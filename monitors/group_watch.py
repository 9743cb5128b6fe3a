"""A monitor process's projects that follow a group their account is not in: said, not silent.

The bridge asks WhatsApp which groups its number is in (bridge/membership.py)
and shows them in `GET /api/health`. A project following a group outside that
list records nothing, for ever, and looks healthy: so each project's status
line says `account main is not in group … (project velo-test)` (shown by
`wa-watchdog status` and the console), the monitor logs it, and the alert rule
`not_in_group` fires for the project's component (resolved once it is in).
A number that sends the project's feedback (each of `send_accounts`) must be
in its groups too: one that is not is said the same way (its feedback cannot
go through that number, which a failover would need).
"""
from __future__ import annotations

import asyncio

import aiohttp
from loguru import logger

from bridge.alert_rules import NOT_IN_GROUP as RULE, not_in_text
from monitors.bridge_client import BridgeClient, BridgeUnavailable
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
        # project -> account -> the project's groups that account is not in
        self.not_in: dict[str, dict[str, list[str]]] = {monitor.project.name: {} for monitor in monitors}

    def problem(self, monitor: ProjectMonitor) -> str:
        """'' or `account main is not in group X (project velo-test): nothing from it is recorded` (one clause per
        account and group; a sending account's says its feedback cannot go through it)."""
        name = monitor.project.name
        return "; ".join(f"{not_in_text(account, group, [name])}: " + (
                         "nothing from it is recorded" if account == monitor.account.name
                         else "its feedback cannot be sent through this number")
                         for account, groups in self.not_in[name].items() for group in groups)

    def status_line(self, monitor: ProjectMonitor) -> str:
        problem = self.problem(monitor)
        return monitor.status_line() + (f" · unhealthy: {problem}" if problem else "")

    async def run(self, stopping: asyncio.Event) -> None:
        async with aiohttp.ClientSession() as http:
            bridges = {name: BridgeClient(self.config, name, http) for name in dict.fromkeys(
                       account for monitor in self.monitors for account in self._accounts(monitor))}
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
            if account in self._accounts(monitor):
                self._set(monitor, account, [group for group in monitor.project.groups if group not in groups])
        return True

    @staticmethod
    def _accounts(monitor: ProjectMonitor) -> list[str]:
        """The numbers a project needs in its groups: the one it listens with, each that sends its feedback."""
        return list(dict.fromkeys((monitor.account.name, *monitor.project.send_accounts)))

    def _set(self, monitor: ProjectMonitor, account: str, missing: list[str]) -> None:
        name = monitor.project.name
        if missing == self.not_in[name].get(account, []):
            return
        was = self.problem(monitor)
        self.not_in[name] = {a: m for a, m in {**self.not_in[name], account: missing}.items() if m}
        self.changed.set()
        if problem := self.problem(monitor):
            logger.error("monitor {}: {}", name, problem)
            self.alerts.fire(RULE, monitor.component, problem)
        elif was:
            logger.info("monitor {}: its accounts are in every group of the project", name)
            self.alerts.resolve(RULE, monitor.component, f"{', '.join(self._accounts(monitor))} in every group of "
                                                         f"project {name} now")
