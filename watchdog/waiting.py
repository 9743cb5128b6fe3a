"""Waiting for an asyncio.Event with a deadline, without losing a cancellation.

Python 3.11's `asyncio.wait_for` can swallow a cancellation that arrives just
as the awaited event is set: the task then carries on, and whatever waits for
it at shutdown hangs until SIGKILL (a monitor stopped while feedback flowed
did exactly that). `asyncio.timeout()` does not, so this is the one way every
process here waits for an event with a timeout.
"""
from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait up to `timeout` seconds for `event`; True if it is set."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        pass
    return event.is_set()
