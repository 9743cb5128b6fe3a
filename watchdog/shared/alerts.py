"""Alert webhooks: tell a human when supervision alone cannot fix things.

The watchdog calls `fire()` / `resolve()` from its event loop; both return at
once. Each [[alerts]] entry gets only the rules it lists, an outage (a rule
registered `lasting`, as the bridge's `disconnect`) only once it has lasted its
`disconnect_threshold`, and one firing per (rule, component)
per `repeat_interval`, counted from the last firing sent, resolved or not: a
component that hangs every two minutes must not page every two minutes. A
resolved notice goes only where a firing went and was not yet resolved. Delivery
runs as background tasks with tenacity retries, so a slow or dead webhook can
neither delay a restart nor crash the watchdog: it is logged and given up on.
A rule no one registered (watchdog/shared/alert_rules.py), such as a health
hook's new word, is logged once per component and sent nowhere, never raised:
it comes from a probe, and the probe must go on.
"""
from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from loguru import logger
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from watchdog.shared import alert_rules
from watchdog.shared.config import AlertConfig
from watchdog.shared.recovery_log import RecoveryLog
from watchdog.shared import clock

FIRING = "firing"
RESOLVED = "resolved"

class WebhookError(Exception):
    """A webhook answered with a non-2xx status.

    5xx, 408 and 429 are the receiver's passing trouble and are retried; any
    other 4xx means the request itself is wrong, and repeating it cannot help.
    """

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text}")
        self.retryable = status >= 500 or status in (408, 429)


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, WebhookError):
        return exc.retryable
    return isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError))


@dataclass(frozen=True)
class Alert:
    status: str
    rule: str
    component: str
    summary: str
    time: str
    duration_s: float | None = None

    def text(self) -> str:
        """One line for chat webhooks (slack/discord)."""
        mark = "FIRING" if self.status == FIRING else "RESOLVED"
        duration = f" (for {self.duration_s:.0f} s)" if self.duration_s is not None else ""
        return f"[wa-watchdog@{socket.gethostname()}] {mark} {self.component}: {alert_rules.title(self.rule)}{duration}: {self.summary}"

    def record(self) -> dict:
        """The structured record of the json format."""
        record = {"status": self.status, "rule": self.rule, "component": self.component,
                  "summary": self.summary, "time": self.time, "host": socket.gethostname()}
        if self.duration_s is not None:
            record["duration_s"] = self.duration_s
        return record


def payload(alert: Alert, fmt: str) -> dict:
    if fmt == "slack":
        return {"text": alert.text()}
    if fmt == "discord":
        return {"content": alert.text()}
    return alert.record()


class AlertManager:
    """Decides which webhook gets which alert and delivers in the background.

    The optional delivery knobs (attempts, backoff, per-attempt timeout) exist so
    tests can retry in milliseconds; the defaults suit real chat webhooks.
    """

    def __init__(self, alerts: list[AlertConfig], recovery_log: RecoveryLog, *, attempts: int = 5,
                 backoff_initial: float = 1.0, backoff_max: float = 30.0, timeout: float = 10.0) -> None:
        self._alerts = alerts
        self._recovery_log = recovery_log
        self._attempts = attempts
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        # (alert index, rule, component) -> monotonic time of the last firing sent there
        self._fired: dict[tuple[int, str, str], float] = {}
        self._open: set[tuple[int, str, str]] = set()  # fired there and not resolved yet
        self._unknown: set[tuple[str, str]] = set()  # (rule, component) not registered, said once
        self._tasks: set[asyncio.Task] = set()
        self._session: aiohttp.ClientSession | None = None

    def fire(self, rule: str, component: str, summary: str, duration_s: float | None = None) -> None:
        """Send a firing alert to every entry that wants it and has not been told within its repeat interval."""
        if self._unregistered(rule, component):
            return
        now = time.monotonic()
        targets = []
        for index, config in enumerate(self._alerts):
            if rule not in config.rules:
                continue
            if alert_rules.lasting(rule) and (duration_s is None or duration_s < config.disconnect_threshold):
                continue
            key = (index, rule, component)
            last = self._fired.get(key)
            if last is not None and now - last < config.repeat_interval:
                continue
            self._fired[key] = now
            self._open.add(key)
            targets.append(config)
        self._send(targets, Alert(FIRING, rule, component, summary, _now_iso(), duration_s))

    def resolve(self, rule: str, component: str, summary: str) -> None:
        """Send a resolved notice wherever a firing of (rule, component) was sent; otherwise nothing."""
        if self._unregistered(rule, component):
            return
        targets = []
        for index, config in enumerate(self._alerts):
            if (index, rule, component) in self._open:
                self._open.discard((index, rule, component))
                targets.append(config)
        self._send(targets, Alert(RESOLVED, rule, component, summary, _now_iso()))

    def _unregistered(self, rule: str, component: str) -> bool:
        """A word no one registered as a rule (a health hook's new condition): said once, alerted nowhere.

        Never an error: it comes from a probe, and a probe that raised would end health probing.
        """
        if alert_rules.get(rule) is not None:
            return False
        if (rule, component) not in self._unknown:
            self._unknown.add((rule, component))
            logger.warning("{}: {!r} is not a registered alert rule: shown in its status, sent to no webhook",
                           component, rule)
        return True

    async def close(self, timeout: float = 5.0) -> None:
        """Give pending deliveries up to `timeout` seconds, cancel the rest, close the HTTP session."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                logger.warning("alerts: {} delivery(ies) still pending at shutdown were dropped", len(pending))
                await asyncio.gather(*pending, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _send(self, targets: list[AlertConfig], alert: Alert) -> None:
        if not targets:
            return
        self._recovery_log.append(alert.component, "alert", rule=alert.rule, status=alert.status,
                                  summary=alert.summary)
        loop = asyncio.get_running_loop()
        for config in targets:
            task = loop.create_task(self._deliver(config, alert))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, config: AlertConfig, alert: Alert) -> None:
        body = payload(alert, config.format)
        try:
            async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(self._attempts),
                    wait=wait_exponential(multiplier=self._backoff_initial, max=self._backoff_max),
                    retry=retry_if_exception(_retryable),
                    reraise=True):
                with attempt:
                    await self._post(config.url, body)
        except (aiohttp.ClientError, asyncio.TimeoutError, WebhookError) as exc:
            logger.error("alert {} {} for {} not delivered to {}: {}", alert.rule, alert.status, alert.component,
                         _redact(config.url), str(exc) or type(exc).__name__)

    async def _post(self, url: str, body: dict) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        async with self._session.post(url, json=body) as response:
            if response.status >= 300:
                raise WebhookError(response.status, (await response.text())[:200])


def _redact(url: str) -> str:
    """Scheme and host only: a Slack or Discord webhook's path is its secret, and logs travel."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/..."


def _now_iso() -> str:
    return clock.now().isoformat()
