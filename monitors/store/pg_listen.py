"""Wake the webhook deliverer when an event commits to the PostgreSQL store: LISTEN on the outbox's channel.

`enqueue` adds a `pg_notify(<schema>_outbox)` to the event's transaction, so
PostgreSQL sends the notification at COMMIT and never for a rollback. One
extra connection, in autocommit (a listener inside a transaction would get
its notifications only at that transaction's end), waits on its socket in
the event loop (psycopg's AsyncConnection.notifies). A notification only
wakes: the outbox is the truth, and the deliverer's safety look carries on
while this connection is down (PostgreSQL restarting); it LISTENs again
with backoff and wakes the deliverer once it does, for what committed meanwhile.

Imported only when a PostgreSQL URL is configured.
"""
from __future__ import annotations

import asyncio

import psycopg
from loguru import logger
from psycopg import sql
from tenacity import RetryCallState, retry, retry_if_exception_type, wait_exponential_jitter

from monitors.store.postgres import CONNECT_TIMEOUT, UNAVAILABLE, reason, redact

RECONNECT_MAX = 5.0  # seconds between LISTEN attempts while PostgreSQL is away
# A listener only reads: a server that vanished without a FIN (a host gone, a cut link) would leave it waiting
# for hours. TCP keepalives find out in ~25 s; until then the safety look delivers.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}


def _log_retry(state: RetryCallState) -> None:
    if state.attempt_number == 1 and state.outcome is not None:
        logger.warning("drops-api: cannot LISTEN yet ({}); retrying with backoff", reason(state.outcome.exception()))


class OutboxListener:
    """Sets `wake` on every notification of `channel`; `run()` until cancelled."""

    def __init__(self, url: str, channel: str, wake: asyncio.Event) -> None:
        self.url = url
        self.channel = channel
        self.wake = wake

    async def run(self) -> None:
        while True:
            conn = await self._listen()
            try:
                async with conn:
                    self.wake.set()  # what committed while nobody listened
                    async for _ in conn.notifies():
                        self.wake.set()
            except UNAVAILABLE as exc:
                logger.warning("drops-api: LISTEN {} lost ({}); the outbox is looked at every second meanwhile",
                               self.channel, reason(exc))

    @retry(retry=retry_if_exception_type(UNAVAILABLE), before_sleep=_log_retry,
           wait=wait_exponential_jitter(initial=0.1, max=RECONNECT_MAX, jitter=0.1))
    async def _listen(self) -> psycopg.AsyncConnection:
        conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                                                     application_name="wa-watchdog drops-api listen", **KEEPALIVES)
        try:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        except BaseException:
            await conn.close()
            raise
        logger.info("drops-api: listening on {} at {}", self.channel, redact(self.url))
        return conn
