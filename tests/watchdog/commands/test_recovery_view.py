"""The recovery view's lines for the supervision records of reload, overload and throttling."""
from __future__ import annotations

from watchdog.commands.recoveries import event_text


def test_reload_overloaded_and_throttle_records_read_as_one_line_each() -> None:
    assert event_text({"event": "reload", "cause": "SIGHUP", "message": "added monitor:velo"}) == \
        "config reloaded (SIGHUP): added monitor:velo"
    assert event_text({"event": "overloaded", "cause": "runnable and starved of CPU (12% of a core)"}) == \
        "overloaded, not hung: given time (runnable and starved of CPU (12% of a core))"
    assert event_text({"event": "throttle", "cause": "8 children starting (max_starting 8)"}) == \
        "start delayed: 8 children starting (max_starting 8)"
    assert event_text({"event": "crash_loop", "cause": "5 exits in 60 s", "backoff_s": 0.8}) == \
        "crash loop (5 exits in 60 s) · backing off, next in 0.80 s"
