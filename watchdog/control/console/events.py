"""Recovery-log events a product declares to the console: windows its records open and close, follow-ups.

Why declared: the timeline and the Incidents panel are built from the recovery
log alone, and the watchdog core knows detections, restarts and stops, not
what a product logs besides (the bridge's disconnect windows and backfills).
An extension (extensions.py) names them in its class's `events`; the console
merges every extension's and hands them to `timeline.py` and `incidents.py`,
which then treat them like their own kinds.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Window:
    """An event that opens a span on its component's row, and the one that closes it (its `downtime_ms`, when
    given, says since when); drawn as a thin band of `kind`, worded `opened (cause)` / `closed after ...`."""

    opens: str
    closes: str
    kind: str  # a timeline kind (its colour and legend come from Events.kinds)
    opened: str  # "disconnected": the span's and the incident's head
    closed: str  # "reconnected": what the incident says when it closes


@dataclass(frozen=True)
class FollowUp:
    """An event that reports on a window after it closed (a backfill): it joins the incident whose window it
    names, and all of an incident's are summed up in one step."""

    event: str
    owner: Callable[[dict], str]  # the component whose window the record reports on
    key: Callable[[dict], tuple]  # what names the window (its records share it)
    summary: Callable[[list[dict]], str]  # every follow-up record of one incident -> one step


@dataclass(frozen=True)
class Events:
    """What one extension (or, merged, all of them) adds to the timeline and the incidents."""

    kinds: dict[str, tuple[str, str]] = field(default_factory=dict)  # timeline kind -> (fill, legend text)
    windows: tuple[Window, ...] = ()
    follow_ups: tuple[FollowUp, ...] = ()

    def window_opened_by(self, event: object) -> Window | None:
        return next((w for w in self.windows if w.opens == event), None)

    def window_closed_by(self, event: object) -> Window | None:
        return next((w for w in self.windows if w.closes == event), None)

    def follow_up(self, event: object) -> FollowUp | None:
        return next((f for f in self.follow_ups if f.event == event), None)


NONE = Events()


def merged(declared: Iterable[Events]) -> Events:
    """Every extension's declarations as one."""
    parts = list(declared)
    return Events({kind: look for part in parts for kind, look in part.kinds.items()},
                  tuple(w for part in parts for w in part.windows), tuple(f for part in parts for f in part.follow_ups))
