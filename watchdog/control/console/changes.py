"""A change counter the arbiter bumps on every component change and the console's live stream waits on."""
from __future__ import annotations

import asyncio


class Changes:
    def __init__(self) -> None:
        self.version = 0
        self._waiters: set[asyncio.Future] = set()

    def bump(self) -> None:
        self.version += 1
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def wait(self, seen: int, timeout: float) -> int:
        """Return once the version is past `seen`, or after `timeout` seconds; the version then."""
        if self.version == seen:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.add(waiter)
            try:
                await asyncio.wait_for(waiter, timeout)
            except asyncio.TimeoutError:
                pass
            finally:
                self._waiters.discard(waiter)
        return self.version
