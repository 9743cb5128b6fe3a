"""The chaos run's traffic and its view of it: a steady stream of drops posted through the simulator, and the
longest time any component was not healthy while it ran (scripts/benchmarks/chaos.py)."""
from __future__ import annotations

import contextlib
import threading
import time
import typing
from dataclasses import dataclass
from datetime import datetime

from scripts.benchmarks.system_run import CONTRACTORS, RunningSystem, group_jid

STATUS_POLL = 0.05  # seconds between looks at the watchdog's status


@dataclass(frozen=True)
class Post:
    drop: str
    project: str
    group: str
    contractor: str
    at: datetime


def iso_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))



class OutageClock(threading.Thread):
    """Polls the watchdog's status; remembers the longest time any component was not healthy."""

    def __init__(self, system: RunningSystem) -> None:
        super().__init__(daemon=True)
        self.system = system
        self.since: dict[str, float] = {}
        self.longest = (0.0, "")
        self.halt = threading.Event()
        self.suspended = threading.Event()  # set while the system is stopped and started on purpose

    @contextlib.contextmanager
    def suspend(self) -> typing.Iterator[None]:
        """Not an outage: the system is stopped and started on purpose (a restore)."""
        self.suspended.set()
        try:
            yield
        finally:
            self.since.clear()
            self.suspended.clear()

    def run(self) -> None:
        while not self.halt.wait(STATUS_POLL):
            if self.suspended.is_set():
                continue
            now = time.monotonic()
            for component in self.system.status():
                name = component["name"]
                if not component["healthy"]:
                    self.since.setdefault(name, now)
                elif name in self.since:
                    self.longest = max(self.longest, (now - self.since.pop(name), name))


class Injector(threading.Thread):
    """Posts one new drop number every 1/rate seconds, round robin over groups and contractors."""

    def __init__(self, system: RunningSystem, projects: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.system = system
        self.projects = projects
        self.interval = 1 / rate
        self.posts: list[Post] = []
        self.halt = threading.Event()
        self._lock = threading.Lock()  # the strike posts too, from the main thread

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            self.post()

    def post(self) -> None:
        """Post the next drop now (also right after a blow, so that drops land in every outage)."""
        with self._lock:
            n = len(self.posts)
            project = n % self.projects + 1
            contractor = CONTRACTORS[n % len(CONTRACTORS)]
            drop = f"DR{7000000 + n}"
            try:
                answer = self.system.inject(group_jid(project), contractor, f"{drop} installed, pole {n}")
            except (OSError, RuntimeError, ValueError):
                return  # WhatsApp (the simulator) is being restarted: not posted, the next tick posts this drop
            self.posts.append(Post(drop, f"p{project}", group_jid(project), contractor, iso_time(answer["timestamp"])))
