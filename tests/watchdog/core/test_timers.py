"""Named timers and owned tasks on the loop: scheduling a name again replaces it, a fired or cancelled timer
is no longer pending, and a task's failure is logged with the program's name, not lost."""
from __future__ import annotations

import asyncio

from loguru import logger

from tests.conftest import until
from watchdog.core.timers import Tasks, Timers


def test_a_name_has_one_pending_timer() -> None:
    async def scenario() -> None:
        timers, fired = Timers(), []
        timers.schedule("backoff", 30.0, lambda: fired.append("old"))
        timers.schedule("backoff", 0.01, lambda: fired.append("new"))
        timers.schedule("reset", 30.0, lambda: fired.append("reset"))
        assert 0 < (timers.remaining("reset") or 0) <= 30.0
        await until(lambda: fired, 2, "the replacing timer")
        assert fired == ["new"] and timers.remaining("backoff") is None
        timers.cancel_all()
        assert timers.remaining("reset") is None
    asyncio.run(scenario())


def test_a_failed_task_is_logged_with_the_programs_name() -> None:
    lines: list[str] = []
    sink = logger.add(lines.append, format="{message}")

    async def broken() -> None:
        raise ValueError("bad")

    async def scenario() -> None:
        tasks = Tasks("monitor:a")
        task = tasks.run(broken())
        await until(task.done, 2, "the task")
        await until(lambda: lines, 2, "the log line")
        waiting = tasks.run(asyncio.sleep(30))
        tasks.cancel_all()
        await until(waiting.done, 2, "the cancelled task")
        assert waiting.cancelled()

    try:
        asyncio.run(scenario())
    finally:
        logger.remove(sink)
    assert lines[0].startswith("monitor:a: internal error")
