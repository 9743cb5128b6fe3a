"""One session websocket of the simulator, and whether its client is still there.

When a device connects again while an older connection of it is still attached, the simulator asks the older
one (`Connection.answers`) before it counts two connections of one device (bridge/simulator/service.py).
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from aiohttp import web

from bridge.simulator.model import Session


class Connection:
    """One session websocket; at most one per session is active."""

    def __init__(self, session: Session, ws: web.WebSocketResponse) -> None:
        self.session = session
        self.ws = ws
        self.cursor = 0  # highest queue sequence number sent on this connection
        self.closing = False
        self.reason = "closed by the client"
        self.ended = False  # the socket handler is done with it
        self.answer: asyncio.Future[bool] | None = None  # a liveness probe waiting for the client's pong

    def detach(self, reason: str) -> None:
        """Stop delivery on this connection at once and give up the session (the socket stays open)."""
        self.closing = True
        self.reason = reason
        if self.session.connection is self:
            self.session.connection = None
        self.session.wakeup.set()

    def drop(self, code: int, reason: str, tasks: set[asyncio.Task]) -> None:
        """Close from the server side; delivery on this connection stops at once."""
        if self.closing:
            return
        self.detach(reason)
        spawn(tasks, self.ws.close(code=code, message=reason.encode("utf-8")[:123]))

    def heard(self, alive: bool = True) -> None:
        """A pong came from the client (or, with `alive` False, the socket ended): a waiting probe has its answer."""
        if self.answer is not None and not self.answer.done():
            self.answer.set_result(alive)

    async def answers(self, deadline: float) -> bool:
        """Whether the client is still there: a ping, and its pong within `deadline`.

        A half-open socket (its peer cut off by the network, or gone without a FIN reaching us) or a frozen
        client never answers; a write to a socket already reset fails at once.
        """
        if self.ended:
            return False
        self.answer = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(deadline):
                await self.ws.ping()
                return await self.answer
        except (TimeoutError, ConnectionError):
            return False
        finally:
            self.answer = None


def spawn(tasks: set[asyncio.Task], coro: Awaitable[object]) -> None:
    """Run `coro` in the background, keeping a reference until it is done."""
    task = asyncio.ensure_future(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
