"""Start and stop order by `after`: a program starts once what it names is settled, and stops before it."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from watchdog.shared.waiting import wait_event

if TYPE_CHECKING:
    from watchdog.core.watcher import Watcher


def dependencies(watcher: Watcher, watchers: dict[str, Watcher]) -> list[Watcher]:
    """The watchers of the programs `watcher` names in `after` (those that exist)."""
    return [watchers[name] for name in watcher.program.after if name in watchers]


async def stop_in_order(watchers: list[Watcher], cause: Callable[[Watcher], str], reload: bool = False) -> None:
    """Stop `watchers` in waves: a program only once nothing still running names it in `after` (`reload`: they
    are removed or changed, not the whole system going down)."""
    for watcher in watchers:
        watcher.begin_shutdown()
    left = list(watchers)
    while left:
        needed = {name for w in left for name in w.program.after}
        wave = [w for w in left if w.name not in needed] or left  # (a cycle cannot pass the config check)
        await asyncio.gather(*(w.stop(cause(w), reload) for w in wave))
        left = [w for w in left if w not in wave]


async def wait_for(changed: asyncio.Event, condition: Callable[[], bool], timeout: float) -> bool:
    """Wait until `condition()` holds, looking again whenever `changed` is set (a watcher changed); False after
    `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        changed.clear()
        if not await wait_event(changed, remaining):
            return condition()
    return True
