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
    """Wait up to `timeout` seconds for `event`; True if it was set meanwhile.

    Woken means set, even if another waiter of the same event cleared it before this one ran: the arbiter's
    start waits share one `changed` event, and reading the flag after waking made all but the first give up
    at once ("not healthy after 60 s") and start before their dependencies.
    """
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True
