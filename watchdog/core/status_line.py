"""What the whole system looks like in one word and one line: READY= and STATUS= for systemd."""
from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from watchdog.core.states import State

if TYPE_CHECKING:
    from watchdog.core.watcher import Watcher


def system_ready(watchers: Iterable[Watcher]) -> bool:
    """Every program healthy.

    A FAILED program (a no-restart exit) counts as settled: it will not get better by waiting, it is
    alerted and shown in STATUS=, and holding READY back would only make systemd restart the lot.
    """
    return all(w.healthy or w.state is State.FAILED for w in watchers)


def status_line(watchers: Iterable[Watcher]) -> str:
    """One line for `systemctl status`, e.g. `bridge main connected · monitors 6/6 ready · 2 restarts in the last hour`.

    A group is counted; a program outside any group is named when there is something to say about it
    (not running, not healthy, or a condition of its own such as `connected`).
    """
    watchers = list(watchers)
    parts = []
    groups: dict[str, list[Watcher]] = {}
    for w in watchers:
        if w.program.group:
            groups.setdefault(w.program.group, []).append(w)
        elif w.pid is None or not w.healthy or w.condition not in ("ready", ""):
            parts.append(f"{w.name.replace(':', ' ')} {w.condition if w.pid else w.state}")
    parts += [f"{group}s {sum(w.healthy for w in members)}/{len(members)} ready" for group, members in groups.items()]
    hour_ago = time.monotonic() - 3600
    restarts = sum(1 for w in watchers for t in w.restart_times if t >= hour_ago)
    parts.append(f"{restarts} restart{'' if restarts == 1 else 's'} in the last hour")
    failed = [w.name for w in watchers if w.state is State.FAILED]
    if failed:
        parts.append(f"FAILED: {', '.join(failed)}")
    return " · ".join(parts)
