"""A real webhook receiver for tests and benchmarks: aiohttp on 127.0.0.1 in its own thread.

It verifies every request with the Standard Webhooks reference library (the
PyPI `standardwebhooks` package, as a receiver of ours would), answers from a
script of statuses (then 200), can be down (stopped) and come back on the same
port, and counts each event by `webhook-id` the way a de-duplicating receiver does.
A receiver told the sender's clock may be stepped (`skews`, chaos --clock-steps)
checks the signature with the library's `sign` and the timestamp against each of
those clocks, as the library does against its own.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from watchdog.shared import clock


@dataclass(frozen=True)
class Request:
    event_id: str
    status: int
    at: float  # time.time() on arrival
    body: dict


TOLERANCE = 300.0  # seconds, the reference library's


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


class WebhookReceiver:
    def __init__(self, secret: str = "", script: Iterable[int] = (), skews: tuple[float, ...] = ()) -> None:
        """`secret`: the `whsec_` secret shared with the sender (a new one by default); `skews`: seconds the
        sender's clock may be off (stepped on purpose) besides 0."""
        self.secret = secret or new_secret()
        self.skews = skews
        self.verifier = Webhook(self.secret)
        self.script = list(script)
        self.requests: list[Request] = []  # verified requests, in arrival order
        self.bad_signatures = 0
        self.port = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def config(self, name: str, events: Iterable[str], url: str = "") -> str:
        """The `[[webhooks]]` entry (and `[drops_api] enabled`) that has `wa-watchdog run` deliver here (or at
        `url`, a relay to here: a sender in another network namespace)."""
        listed = ", ".join(f'"{e}"' for e in events)
        return (f'\n[drops_api]\nenabled = true\n\n[[webhooks]]\nname = "{name}"\nurl = "{url or self.url}"\n'
                f'secret = "{self.secret}"\nevents = [{listed}]\n')

    def accepted(self) -> dict[str, int]:
        """webhook-id -> how many times it was answered 200 (a de-duplicating receiver processes it once)."""
        with self._lock:
            counts: dict[str, int] = {}
            for request in self.requests:
                if request.status == 200:
                    counts[request.event_id] = counts.get(request.event_id, 0) + 1
            return counts

    def events(self) -> dict[str, dict]:
        """The first accepted body of each event id."""
        with self._lock:
            found: dict[str, dict] = {}
            for request in self.requests:
                if request.status == 200:
                    found.setdefault(request.event_id, request.body)
            return found

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            self._verify(body, request.headers)
        except WebhookVerificationError:
            with self._lock:
                self.bad_signatures += 1
            return web.json_response({"error": "bad signature"}, status=401)
        with self._lock:
            status = self.script.pop(0) if self.script else 200
            self.requests.append(Request(request.headers["webhook-id"], status, time.time(), json.loads(body)))
        return web.json_response({"status": status}, status=status,
                                 headers={"Retry-After": "0"} if status == 429 else {})

    def _verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        ours = clock.now_s() - time.time()  # the product's clock here: CI's run a year ahead, a test's fixed clock
        skews = (*self.skews, ours) if abs(ours) > TOLERANCE else self.skews
        if not skews:
            self.verifier.verify(body, dict(headers))
            return
        try:
            stamp = float(headers.get("webhook-timestamp", ""))
        except ValueError:
            raise WebhookVerificationError("Invalid Signature Headers") from None
        if not any(abs(stamp - time.time() - skew) <= TOLERANCE for skew in (0.0, *skews)):
            raise WebhookVerificationError("Message timestamp too old or too new for every clock of the sender")
        expected = self.verifier.sign(headers.get("webhook-id", ""), datetime.fromtimestamp(stamp, timezone.utc), body)
        if expected not in headers.get("webhook-signature", "").split(" "):
            raise WebhookVerificationError("No matching signature found")

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start(self, port: int | None = None) -> str:
        """Listen (on `port`, else the port of the last start, else any free one); returns the URL."""
        if port is not None:
            self.port = port
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self.url

    def stop(self) -> None:
        """Stop listening (the receiver is down: connections are refused)."""
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
