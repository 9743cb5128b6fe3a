"""Helpers for the simulator tests: start the real sim, call its control API, record handler calls."""
from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import aiohttp

from bridge.transport import ConnectionEvent, ConnectionKind, IncomingMessage, Receipt
from tests.conftest import BASE_CONFIG, GROUP_A, GROUP_B, PACE_OFF, Processes
from watchdog.shared import endpoints

MAIN_PHONE = "27710000000"
SENDER_PHONE = "27710000009"
CONTRACTOR = "27710000001@s.whatsapp.net"

# BASE_CONFIG plus a second sim number that sends feedback (the two-number setup).
TWO_SESSIONS_CONFIG = BASE_CONFIG.replace(
    'name = "lawley"\n', 'name = "lawley"\nlisten_account = "main"\nsend_account = "sender"\n').replace(
    'name = "mohadin"\n', 'name = "mohadin"\nlisten_account = "main"\n') + f"""
[accounts.sender]
transport = "sim"
phone = "{SENDER_PHONE}"
api_port = 0
{PACE_OFF}
"""
assert GROUP_A in TWO_SESSIONS_CONFIG and GROUP_B in TWO_SESSIONS_CONFIG


def start_sim(procs: Processes, data_dir: Path, after: subprocess.Popen | None = None) -> tuple[subprocess.Popen, str]:
    """Start `wa-watchdog sim`; returns the process and its control API URL once published."""
    proc = procs.start("sim")
    try:
        url = endpoints.wait_url(data_dir, "sim", newer_than_pid=after.pid if after else None)
    except TimeoutError:
        proc.kill()
        raise AssertionError(f"sim did not publish its endpoint: {proc.communicate()[1].decode()}") from None
    return proc, url


class SimAPI:
    """The simulator's control API (docs/ARCHITECTURE.md)."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base

    async def call(self, method: str, path: str, body: object = None, **params: str) -> tuple[int, Any]:
        async with self.http.request(method, self.base + path, json=body, params=params) as response:
            return response.status, await response.json()

    async def inject(self, text: str = "DR1234567 installed", chat_jid: str = GROUP_A, sender: str = CONTRACTOR,
                     **extra: object) -> dict:
        status, body = await self.call("POST", "/sim/inject", {"chat_jid": chat_jid, "sender_jid": sender,
                                                                "text": text, **extra})
        assert status == 200, body
        return body

    async def inject_many(self, texts: list[str], chat_jid: str = GROUP_A, sender: str = CONTRACTOR) -> list[dict]:
        status, body = await self.call("POST", "/sim/inject", [{"chat_jid": chat_jid, "sender_jid": sender,
                                                                 "text": text} for text in texts])
        assert status == 200, body
        return body

    async def session(self, phone: str = MAIN_PHONE) -> dict:
        status, body = await self.call("GET", "/sim/sessions")
        assert status == 200, body
        return body[phone]

    async def disconnect(self, phone: str = MAIN_PHONE, reason: str = "test") -> bool:
        status, body = await self.call("POST", "/sim/disconnect", {"session": phone, "reason": reason})
        assert status == 200, body
        return body["disconnected"]

    async def sent(self, **params: str) -> list[dict]:
        status, body = await self.call("GET", "/sim/sent", **params)
        assert status == 200, body
        return body


class Recorder:
    """A bridge-side Handler that records what the transport hands it; can fail to commit on demand."""

    def __init__(self, fail_batches: int = 0, commit_delay: float = 0.0) -> None:
        self.batches: list[list[IncomingMessage]] = []
        self.events: list[ConnectionEvent] = []
        self.receipts: list[Receipt] = []
        self.log: list[str] = []  # call order: "messages" / "receipts" / event kinds
        self.fail_batches = fail_batches
        self.commit_delay = commit_delay

    async def on_messages(self, messages: list[IncomingMessage]) -> None:
        self.log.append("messages")
        if self.fail_batches:
            self.fail_batches -= 1
            raise RuntimeError("store not writable (test)")
        if self.commit_delay:
            await asyncio.sleep(self.commit_delay)  # a commit that takes time, as a real store's does
        self.batches.append(messages)

    async def on_connection(self, event: ConnectionEvent) -> None:
        self.log.append(event.kind.value)
        self.events.append(event)

    async def on_receipts(self, receipts: list[Receipt]) -> None:
        self.log.append("receipts")
        self.receipts.extend(receipts)

    @property
    def messages(self) -> list[IncomingMessage]:
        return [m for batch in self.batches for m in batch]

    def count(self, kind: ConnectionKind) -> int:
        return sum(1 for e in self.events if e.kind == kind)

    def reasons(self, kind: ConnectionKind) -> list[str]:
        return [e.reason for e in self.events if e.kind == kind]
