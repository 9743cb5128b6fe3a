"""The watcher's status record: what `wa-watchdog status` shows about a component waiting out its backoff."""
from __future__ import annotations

from pathlib import Path

from tests.test_watchdog_supervision import run, supervise, until, worker, write_settings
from watchdog.states import State


def test_backoff_says_when_the_next_start_is(tmp_path: Path) -> None:
    async def scenario() -> None:
        config = write_settings(tmp_path, backoff_initial=3.0, backoff_max=6.0)
        async with supervise(config, [worker("monitor:a", "--exit-after", "0", "--code", "1")]) as s:
            watcher = s.watcher("monitor:a")
            await until(lambda: watcher.state == State.BACKOFF, 15, "the second exit (the first restart is at once)")
            status = s.arbiter.status()[0]
            assert status["state"] == "backoff" and 0 < status["next_start_in_s"] <= 6.0, status
            running = [c for c in s.arbiter.status() if c["state"] != "backoff"]
            assert all(c["next_start_in_s"] is None for c in running)
    run(scenario)
