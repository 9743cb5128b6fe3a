"""Work a supervised program schedules on the watchdog's event loop: named one-shot timers and owned tasks.

Why one helper: the watcher, its checks, its restarts and its standby each keep
timers (the backoff, a heartbeat deadline, the next standby) and background
tasks (a child's stop, a probe loop); each must be cancelled with its owner,
and a task's failure must be logged, never lost.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from loguru import logger


class Timers:
    """At most one pending timer per name; scheduling a name again replaces it."""

    def __init__(self) -> None:
        self._handles: dict[str, asyncio.TimerHandle] = {}

    def schedule(self, name: str, delay: float, callback: Callable[[], None]) -> None:
        self.cancel(name)
        self._handles[name] = asyncio.get_running_loop().call_later(delay, self._fire, name, callback)

    def _fire(self, name: str, callback: Callable[[], None]) -> None:
        self._handles.pop(name, None)
        callback()

    def cancel(self, name: str) -> None:
        handle = self._handles.pop(name, None)
        if handle is not None:
            handle.cancel()

    def remaining(self, name: str) -> float | None:
        """Seconds until `name` fires (negative: it is overdue, the loop is late), None if it is not pending."""
        handle = self._handles.get(name)
        return None if handle is None else handle.when() - asyncio.get_running_loop().time()

    def cancel_all(self) -> None:
        for name in list(self._handles):
            self.cancel(name)


class Tasks:
    """Background tasks of one program: kept referenced until done, a failure logged with the program's name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: set[asyncio.Task] = set()

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.opt(exception=task.exception()).error("{}: internal error", self.name)

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
