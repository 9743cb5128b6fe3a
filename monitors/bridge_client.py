"""The monitors' client of a sending account's bridge: send, react, withdraw, fence and health over its REST API.

Found through the endpoint the bridge publishes (a killed bridge's port may belong to someone else: its pid is
checked first). Answers are mapped for monitors/feedback.py: 200 sent, 202 queued, a refusal that can never
succeed failed, 409 withdrawn LeaseLost, 409 doubt SendInDoubt; no answer (or any other) BridgeUnavailable,
retried by the caller.
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from monitors.drops_store import (FEEDBACK_FAILED, FEEDBACK_QUEUED, FEEDBACK_SENT, KIND_ACK, KIND_OPERATOR, Feedback,
                                  Fence, LeaseLost)
from watchdog.components import Config
from watchdog.shared import endpoints

REQUEST_TIMEOUT = 10.0  # the bridge's own send timeout is 10 s; after that the send stays in its outbox
# The bridge refused this request (bad request; WhatsApp refused the send): resending it cannot help.
# Anything else is retried: a 401 waits for the token to be fixed, and a 404 may come from another
# server that took a dead bridge's port before the new bridge published its own.
FINAL_FAILURES = {400, 403, 404, 413, 422, 500}  # 403/404: not a member / unknown group; 422: refused or dead-lettered


class BridgeUnavailable(Exception):
    """No bridge answered (not started, restarting, overloaded): try again later."""


class SendInDoubt(Exception):
    """The bridge handed the send to WhatsApp and lost its answer, and never sends it again (bridge/outbox.py): it
    is found out, not posted again (monitors/fate.py)."""


@dataclass(frozen=True)
class Answer:
    status: str  # FEEDBACK_SENT | FEEDBACK_QUEUED | FEEDBACK_FAILED
    message: str
    bridge_message_id: str | None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, under another user
    return True


class BridgeClient:
    """POSTs feedback to the sending account's bridge, found through its published endpoint."""

    def __init__(self, config: Config, send_account: str, http: aiohttp.ClientSession) -> None:
        account = config.account(send_account)
        self.data_dir = config.data_dir
        self.component = account.component
        self.headers = {"Authorization": f"Bearer {account.api_token}"} if account.api_token else {}
        self.http = http

    def _base(self) -> str:
        record = endpoints.read(self.data_dir, self.component)
        if record is None or "api" not in record["endpoints"]:
            raise BridgeUnavailable(f"{self.component} has not published its API (not started?)")
        if not _alive(record["pid"]):  # killed: its port may belong to someone else by now
            raise BridgeUnavailable(f"{self.component} (pid {record['pid']}) is not running")
        return record["endpoints"]["api"]

    async def health(self) -> dict:
        """The bridge's `GET /api/health` answer (200 or 503, both say how it is); BridgeUnavailable if none."""
        base = self._base()
        try:
            async with self.http.get(f"{base}/api/health", headers=self.headers,
                                     timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as response:
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise BridgeUnavailable(f"{self.component} at {base}: {type(exc).__name__}: {exc}") from None
        if not isinstance(body, dict):
            raise BridgeUnavailable(f"{self.component} at {base}: health is not a JSON object")
        return body

    async def _post_json(self, path: str, body: dict, headers: dict[str, str] | None = None,
                         timeout: float = REQUEST_TIMEOUT) -> tuple[int, object]:
        """POST `body` to the bridge: its status and JSON answer; BridgeUnavailable if none."""
        base = self._base()
        try:
            async with self.http.post(f"{base}{path}", json=body, headers={**self.headers, **(headers or {})},
                                      timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                return response.status, await response.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise BridgeUnavailable(f"{self.component} at {base}: {type(exc).__name__}: {exc}") from None

    async def fence(self, fence: Fence, valid_until: float | None, timeout: float) -> dict:
        """Tell the bridge that `fence`'s token is valid until `valid_until` (CLOCK_MONOTONIC), or lost (None)."""
        body: dict = {"lease": fence.account, "token": fence.token}
        # valid while this process (the keeper) lives: dying, it voids it at once (bridge/fence.py)
        body.update({"valid_until": valid_until, "keeper": os.getpid()} if valid_until is not None else {"lost": True})
        status, reply = await self._post_json("/api/fence", body, timeout=timeout)
        if status != 200 or not isinstance(reply, dict):
            raise BridgeUnavailable(f"{self.component}: /api/fence answered HTTP {status}: {reply}")
        return reply

    async def withdraw(self, keys: Sequence[str]) -> dict[str, str]:
        """Take back queued sends by key: each key's state after (withdrawn, sending, sent, failed, unknown)."""
        status, reply = await self._post_json("/api/withdraw", {"idempotency_keys": list(keys)})
        if status != 200 or not isinstance(reply, dict) or not isinstance(reply.get("states"), dict):
            raise BridgeUnavailable(f"{self.component}: /api/withdraw answered HTTP {status}: {reply}")
        return {str(key): str(state) for key, state in reply["states"].items()}

    async def post(self, feedback: Feedback, ack: str = "message", target: str = "",
                   fence: Fence | None = None) -> Answer:
        """Send one feedback row: an acknowledgement as `ack` says, operator feedback as a reply; replies and
        reactions name the message `target` (the drop's latest submission, sent by the first mention). Under a
        cluster's sender lease (`fence`) the bridge sends it only while that token is valid (LeaseLost: it knows
        the token is over)."""
        path, body = "/api/send", {"recipient": feedback.recipient, "message": feedback.text,
                                   "mentions": list(feedback.mentions)}
        contractor = feedback.mentions[0] if feedback.mentions else ""
        if feedback.kind == KIND_ACK and ack == "reaction" and target:
            path, body = "/api/react", {"recipient": feedback.recipient, "message_id": target,
                                        "emoji": feedback.text, "from_me": False, "sender_jid": contractor}
        elif target and (feedback.kind == KIND_OPERATOR or ack == "reply"):
            body.update(quoted_message_id=target, quoted_sender_jid=contractor, quoted_content=feedback.drop_number)
        if feedback.kind == KIND_OPERATOR:  # the bridge's pace sends it before automatic acknowledgements
            body["priority"] = "operator"
        if fence is not None:
            body["fence"] = {"lease": fence.account, "token": fence.token}
        status, reply = await self._post_json(path, body, {"Idempotency-Key": feedback.idempotency_key})
        message = str(reply.get("message", "")) if isinstance(reply, dict) else ""
        bridge_id = reply.get("id") if isinstance(reply, dict) else None
        if status == 200:
            return Answer(FEEDBACK_SENT, message, bridge_id)
        if status == 202:
            return Answer(FEEDBACK_QUEUED, message, bridge_id)
        if status == 409 and isinstance(reply, dict) and reply.get("doubt") is True:
            raise SendInDoubt(f"feedback {feedback.id}: {self.component}: {message}")
        if status == 409 and isinstance(reply, dict) and reply.get("withdrawn") is True:
            raise LeaseLost(f"feedback {feedback.id}: {self.component} withdrew it: {message}")
        if status in FINAL_FAILURES:
            return Answer(FEEDBACK_FAILED, f"HTTP {status}: {message}", bridge_id)
        raise BridgeUnavailable(f"{self.component}: HTTP {status}: {message}")


class Poster(Protocol):
    """What posts a feedback row: one account's BridgeClient, or a project's Senders (monitors/failover.py)."""

    async def post(self, feedback: Feedback, ack: str = "message", target: str = "",
                   fence: Fence | None = None) -> Answer: ...

    async def withdraw(self, keys: Sequence[str]) -> dict[str, str]: ...
