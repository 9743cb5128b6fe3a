"""Event webhooks: deliver the drops store's durable event outbox to each `[[webhooks]]` receiver.

At least once, never lost: the store writes each event in the transaction of
the change it reports, and a delivery leaves the outbox only when a receiver
answered 2xx (`delivered`), refused it for good (`dead`), or ran out of
`max_attempts` (`dead`). A restart picks up where the store says; the
`webhook-id` is the event's id on every attempt, so receivers dedupe on it.

Answers: 2xx delivered; 400, 401, 403, 408, 429, 5xx, redirects, no answer or
a timeout are retried with exponential backoff and jitter (tenacity's wait; a
longer Retry-After is honoured); any other 4xx is final. 400/401/403 are what a
receiver answers when the Standard Webhooks library rejects a signature, and it
rejects a right one whose timestamp is more than 5 minutes off its own clock:
a clock stepped or skewed on either side made every event dead at once, though
the attempt after the clocks agree again is delivered. A dead event is alerted
through the [[alerts]] webhooks (rule `webhook_dead`), at most once per
receiver per repeat interval, and recorded in the recovery log by the
AlertManager: the drops domain raises its own alert, the watchdog core stays
ignorant of drops.

Clock steps: next attempts are times on this process's wall clock (only it
writes and compares them). When that clock is stepped back, deliveries whose
next attempt now lies further ahead than the longest backoff are made due at
once, at start (a step while the process was down) and whenever a step is
seen between two looks; a step forward only makes them due early.
"""
from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol, Sequence

import aiohttp
from loguru import logger
from tenacity import RetryCallState, wait_exponential_jitter

from bridge.schema import format_ts, parse_ts
from monitors.api import signing
from monitors.config import WebhookConfig
from watchdog.shared.waiting import wait_event
from watchdog.shared import clock

SAFETY_INTERVAL = 1.0  # seconds between looks at the outbox with no wake-up (one missed costs at most this)
IN_FLIGHT = 8  # concurrent deliveries per receiver
FINAL_EXCEPT = (400, 401, 403, 408, 429)  # 4xx answers worth retrying (a signature refused: see the module)


class OutboxEvent(Protocol):
    seq: int
    id: str
    type: str
    created_at: str
    payload: str
    attempts: int


class WebhookOutbox(Protocol):
    """The drops store's delivery queue (`db.outbox`, monitors/store/outbox.py)."""

    def start(self, webhook: str, start_at: str) -> None: ...
    def due(self, webhook: str, types: Sequence[str], now: str, limit: int = 100) -> list[OutboxEvent]: ...
    def delivered(self, webhook: str, seq: int) -> None: ...
    def failed(self, webhook: str, seq: int, error: str, next_attempt_at: str) -> None: ...
    def dead(self, webhook: str, seq: int, error: str) -> None: ...
    def next_retry(self, webhook: str, after: str) -> str | None: ...
    def reschedule(self, webhook: str, now: str, later_than: str) -> int: ...


class LookSchedule(Protocol):
    """When the deliverer looks at the outbox next (monitors/store_watch.py's WakeSchedule on drops.db)."""

    wake: asyncio.Event  # set by whatever announces a change: inotify, a NOTIFY, an attempt that finished

    async def next_look(self, limit: float = math.inf) -> bool: ...
    def committed(self) -> None: ...


class WokenSchedule:
    """A look when `wake` is set, or after `limit`: for a store whose commit is visible when it wakes us (NOTIFY)."""

    def __init__(self) -> None:
        self.wake = asyncio.Event()

    async def next_look(self, limit: float = math.inf) -> bool:
        await wait_event(self.wake, limit)
        self.wake.clear()
        return True

    def committed(self) -> None:
        """Nothing to settle: PostgreSQL notifies after the commit is visible."""


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    final: bool  # the receiver refused it for good: no retry
    error: str = ""
    retry_after: float = 0.0


@dataclass
class HookStats:
    """What this process did for one receiver since it started (the store holds the durable counts)."""

    delivered: int = 0
    failures: int = 0  # failed attempts
    dead: int = 0
    last_error: str = ""


def classify(status: int, retry_after: str | None) -> Outcome:
    if 200 <= status < 300:
        return Outcome(True, False)
    final = 400 <= status < 500 and status not in FINAL_EXCEPT
    wait = float(retry_after) if retry_after and retry_after.strip().isdigit() else 0.0
    return Outcome(False, final, f"HTTP {status}", wait)


def backoff(hook: WebhookConfig) -> Callable[[int], float]:
    """Seconds to wait after the n-th failed attempt: initial * 2^(n-1) plus up to `initial` of jitter, capped."""
    wait = wait_exponential_jitter(multiplier=hook.backoff_initial, max=hook.backoff_max, jitter=hook.backoff_initial)

    def delay(attempt: int) -> float:
        state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        state.attempt_number = attempt
        return wait(state)
    return delay


@dataclass
class _Receiver:
    hook: WebhookConfig
    key: bytes
    delay: Callable[[int], float]
    stats: HookStats = field(default_factory=HookStats)
    in_flight: set[int] = field(default_factory=set)
    seen: int = 0  # the highest event seq looked at: a higher one means a wake's commit is visible
    started: bool = False  # the store gave it its place in the event stream (`WebhookOutbox.start`)
    horizon: float | None = None  # seconds: make deliveries due after now + this due now (None: nothing to do)


class Deliverer:
    """Looks at the outbox when `run(schedule)`'s schedule wakes it, posts what is due, signed; runs until cancelled.

    Woken by a change of the store, by an attempt that finished (room for more, or a retry to schedule) and
    when the first backoff falls due; otherwise every SAFETY_INTERVAL. An idle process thus sleeps.
    """

    def __init__(self, hooks: list[WebhookConfig], outbox: WebhookOutbox, http: aiohttp.ClientSession,
                 on_dead: Callable[[WebhookConfig, str, str], None]) -> None:
        # At start: a next attempt further ahead than the longest backoff was scheduled before a step back.
        self.receivers = [_Receiver(h, signing.secret_key(h.secret), backoff(h), horizon=h.backoff_max) for h in hooks]
        self.outbox = outbox
        self.http = http
        self.on_dead = on_dead
        self.schedule: LookSchedule  # run()'s: its attempts wake it when they finish
        self.store_error = ""  # the last outbox error, "" while the store answers
        self.looks = 0  # looks at the outbox since start (/metrics: what idling costs)
        self._tasks: set[asyncio.Task] = set()

    def stats(self) -> dict[str, HookStats]:
        return {r.hook.name: r.stats for r in self.receivers}

    def start_receivers(self) -> bool:
        """Place every receiver new to the store in the event stream (its `start_at`) before its first delivery.

        Called before serving (and before the store is watched: this write must not wake the looks), so that a
        receiver added now starts at the event current now; a store that is down then is tried again at each
        look, and nothing is sent to a receiver before it is placed.
        """
        for receiver in self.receivers:
            if receiver.started:
                continue
            try:
                self.outbox.start(receiver.hook.name, receiver.hook.start_at)
            except Exception as exc:  # noqa: BLE001 - a store outage (PostgreSQL down): keep trying, say why
                self._store_failed(exc)
                return False
            receiver.started = True
        return True

    async def run(self, schedule: LookSchedule) -> None:
        self.schedule = schedule
        steps = clock.StepDetector()
        try:
            while self.receivers:
                self.looks += 1
                if (step := steps.check()) is not None and step < 0:
                    logger.warning("webhooks: {}: retries scheduled on the old clock are due now",
                                   clock.describe_step(step))
                    for receiver in self.receivers:
                        receiver.horizon = 0.0
                now = clock.now()
                wait, new = SAFETY_INTERVAL, False
                for receiver in self.receivers:
                    new |= self._start_due(receiver, now)
                    if not self.store_error:  # a store down is tried again at the safety look, not twice a look
                        wait = min(wait, self._retry_wait(receiver, now))
                if new:
                    self.schedule.committed()
                await self.schedule.next_look(wait)
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _start_due(self, receiver: _Receiver, now: datetime) -> bool:
        """Start the receiver's due deliveries; True when the look found an event newer than any before."""
        room = IN_FLIGHT - len(receiver.in_flight)
        if room <= 0 or not self.start_receivers():
            return False  # a finished attempt wakes the next look; an unplaced receiver waits for the store
        try:
            if receiver.horizon is not None:
                moved = self.outbox.reschedule(receiver.hook.name, format_ts(now),
                                               format_ts(now + timedelta(seconds=receiver.horizon)))
                if moved:
                    logger.warning("webhook {}: {} deliveries were scheduled on a wall clock since stepped back: "
                                   "due now", receiver.hook.name, moved)
                receiver.horizon = None
            due = self.outbox.due(receiver.hook.name, receiver.hook.events, format_ts(now), room + IN_FLIGHT)
        except Exception as exc:  # noqa: BLE001 - a store outage (PostgreSQL down): keep trying, say why
            self._store_failed(exc)
            return False
        self.store_error = ""
        newest = max((event.seq for event in due), default=0)
        new, receiver.seen = newest > receiver.seen, max(receiver.seen, newest)
        for event in due:
            if event.seq in receiver.in_flight:
                continue
            if len(receiver.in_flight) >= IN_FLIGHT:
                break
            receiver.in_flight.add(event.seq)
            task = asyncio.get_running_loop().create_task(self._attempt(receiver, event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return new

    def _retry_wait(self, receiver: _Receiver, now: datetime) -> float:
        """Seconds until the receiver's first delivery in backoff falls due (no store change announces it)."""
        try:
            at = self.outbox.next_retry(receiver.hook.name, format_ts(now))
        except Exception as exc:  # noqa: BLE001 - as in _start_due
            self._store_failed(exc)
            return SAFETY_INTERVAL
        return math.inf if at is None else max(0.0, (parse_ts(at) - clock.now()).total_seconds())

    def _store_failed(self, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"
        if error != self.store_error:
            logger.error("webhooks: outbox unavailable: {}", error)
        self.store_error = error

    async def _attempt(self, receiver: _Receiver, event: OutboxEvent) -> None:
        try:
            outcome = await self.post(receiver, event)
            self._record(receiver, event, outcome)
        except Exception as exc:  # noqa: BLE001 - the store failed to record: the delivery stays due, tried again
            self._store_failed(exc)
        finally:
            receiver.in_flight.discard(event.seq)
            self.schedule.wake.set()

    async def post(self, receiver: _Receiver, event: OutboxEvent) -> Outcome:
        body = event.payload.encode("utf-8")
        headers = signing.headers(receiver.key, event.id, int(clock.now_s()), body)
        try:
            async with self.http.post(receiver.hook.url, data=body, headers=headers, allow_redirects=False,
                                      timeout=aiohttp.ClientTimeout(total=receiver.hook.timeout)) as response:
                return classify(response.status, response.headers.get("Retry-After"))
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            return Outcome(False, False, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)

    def _record(self, receiver: _Receiver, event: OutboxEvent, outcome: Outcome) -> None:
        hook, stats = receiver.hook, receiver.stats
        if outcome.delivered:
            self.outbox.delivered(hook.name, event.seq)
            stats.delivered += 1
            return
        stats.failures += 1
        stats.last_error = outcome.error
        attempts = event.attempts + 1
        if outcome.final or attempts >= hook.max_attempts:
            why = "refused" if outcome.final else f"{attempts} attempts failed"
            error = f"{why}, last: {outcome.error}"
            self.outbox.dead(hook.name, event.seq, error)
            stats.dead += 1
            logger.error("webhook {}: event {} ({}) is dead: {}", hook.name, event.id, event.type, error)
            self.on_dead(hook, event.id, f"{event.type} event {event.id} not delivered: {error}")
            return
        delay = min(max(receiver.delay(attempts), outcome.retry_after), hook.backoff_max)
        self.outbox.failed(hook.name, event.seq, outcome.error, format_ts(clock.now() + timedelta(seconds=delay)))
        if attempts in (1, 5) or attempts % 20 == 0:
            logger.warning("webhook {}: event {} attempt {} failed ({}); next in {:.1f} s", hook.name, event.id,
                           attempts, outcome.error, delay)
