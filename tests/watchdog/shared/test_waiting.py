"""The one wait-for-an-event-with-a-deadline: set, timed out, a cancellation that is never swallowed, and a
wake-up that counts even when another waiter cleared the event first."""
from __future__ import annotations

import asyncio

from watchdog.shared.waiting import wait_event


def test_set_timed_out_and_cancelled() -> None:
    async def scenario() -> None:
        event = asyncio.Event()
        assert not await wait_event(event, 0.01)
        asyncio.get_running_loop().call_later(0.01, event.set)
        assert await wait_event(event, 5)
        # Cancelled in the same loop iteration as the event is set (the race asyncio.wait_for loses on 3.11):
        # the cancellation must still end the waiter, every time.
        for _ in range(200):
            event.clear()
            waiter = asyncio.ensure_future(wait_event(event, 5))
            await asyncio.sleep(0)
            event.set()
            waiter.cancel()
            try:
                await waiter
            except asyncio.CancelledError:
                continue
            raise AssertionError("the cancellation was swallowed")
    asyncio.run(scenario())


def test_every_waiter_woken_by_a_set_reports_it_though_the_first_clears_it() -> None:
    async def waiter(event: asyncio.Event) -> bool:
        woken = await wait_event(event, 5)
        event.clear()  # as the arbiter's start waits do before looking again
        return woken

    async def scenario() -> list[bool]:
        event = asyncio.Event()
        waiters = [asyncio.ensure_future(waiter(event)) for _ in range(4)]
        await asyncio.sleep(0)
        event.set()
        return await asyncio.gather(*waiters)
    assert asyncio.run(scenario()) == [True] * 4
