"""The recovery log grouped into incidents: one line each, cause → restart → healthy → what followed.

An incident opens with what went wrong on a component (a detection, a
planned stop, a restart nobody logged a detection for, a window an extension
declared being opened, a crash loop, a failure, an alert) and collects what
followed: the recovery's restart and healthy records (joined by
`watchdog.commands.recoveries.group`), a declared window opened by the crash and
closed later, and the follow-ups that report on that window (events.py: e.g. the
bridge's disconnect window and the backfill reports on it), summed up in one step.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from watchdog.commands.recoveries import DETECTIONS, Line, group
from watchdog.control.console.events import NONE, Events, FollowUp
from watchdog.shared.human import format_ms

JOIN_S = 120.0  # a window, alert or follow-up this soon after an incident's last record belongs to it
JID = re.compile(r"\b[\d-]+@g\.us\b")


@dataclass
class Incident:
    """One line of the Incidents panel: what went wrong first, then what followed, in that order."""

    component: str
    started: float
    head: str  # what went wrong (for a repeated failure: the first one, counted)
    tail: list[str] = field(default_factory=list)  # the latest recovery's restart and healthy
    extras: list[str] = field(default_factory=list)  # crash loop, alerts
    after: list[str] = field(default_factory=list)  # its window closing
    records: list[dict] = field(default_factory=list)
    ended: float = 0.0
    repeats: int = 1  # failures of the same component before it was healthy again
    recovered: bool = False  # a `healthy` record closed the recovery
    window_open: bool = False  # a declared window that has not been closed yet
    window_closed: bool = False  # a window of it closed: a later one is a new incident
    follow_ups: dict[FollowUp, list[dict]] = field(default_factory=dict)  # what reported on its window

    def summary(self, names: Mapping[str, str]) -> str:
        """cause → restart → healthy → follow-ups, with group names for JIDs."""
        head = self.head + (f" ({self.repeats}×)" if self.repeats > 1 else "")
        steps = [head, *self.extras, *self.tail, *self.after]
        steps += [follow_up.summary(records) for follow_up, records in self.follow_ups.items()]
        return with_names(" → ".join(s for s in steps if s), names)

    @property
    def kind(self) -> str:
        """For colour: the first record's event (exit, hang, alert, a declared window's, ...)."""
        return str(self.records[0].get("event", "")) if self.records else ""


def with_names(text: str, names: Mapping[str, str]) -> str:
    return JID.sub(lambda m: names.get(m.group(0), m.group(0)), text)


def incidents(records: list[dict], events: Events = NONE) -> list[Incident]:
    """Incidents oldest first (the console shows them newest first); `events`: what the extensions declared."""
    result: list[Incident] = []
    latest: dict[str, Incident] = {}  # component -> its latest incident
    by_window: dict[tuple, Incident] = {}  # (follow-up event, what names the window) -> incident with that window

    def new(component: str, line: Line, head: str, tail: list[str] | None = None) -> Incident:
        incident = Incident(component, line.time, head, tail or [])
        result.append(incident)
        latest[component] = incident
        attach(incident, line)
        return incident

    def attach(incident: Incident, line: Line) -> None:
        incident.records.extend(line.records)
        incident.records.sort(key=lambda r: r.get("time", 0.0))  # raw records read in time order
        incident.ended = max(incident.ended, *(r.get("time", line.time) for r in line.records), line.time)
        incident.recovered = incident.recovered or line.healthy is not None

    def recent(component: str, moment: float) -> Incident | None:
        """The component's incident still going on: its window is open, or its last record is recent."""
        incident = latest.get(component)
        if incident is None or not (incident.window_open or moment - incident.ended <= JOIN_S):
            return None
        return incident

    shutdown: Incident | None = None  # the watchdog's stop: every component's `stop (shutdown)` joins it
    for line in group(records):
        record = line.records[0] if line.records else {}
        event = record.get("event")
        component = line.component
        parts = line.parts()
        if event == "stop" and record.get("cause") == "shutdown" and line.restart is None:
            if shutdown is None or line.time - shutdown.ended > JOIN_S:
                shutdown = new("watchdog", line, "shutting down")
            else:
                attach(shutdown, line)
            shutdown.tail = [f"stopped {', '.join(r['component'] for r in shutdown.records if r['component'] != 'watchdog')}"]
        elif event == "stop" and component == "watchdog" and shutdown is not None \
                and line.time - shutdown.ended <= JOIN_S:
            attach(shutdown, line)
            shutdown.head = parts[0]
            shutdown = None
        elif event in DETECTIONS and (current := recent(component, line.time)) is not None \
                and current.kind in DETECTIONS and not current.recovered:
            attach(current, line)  # failed again before it was healthy: one incident, counted
            current.repeats += 1
            current.tail = parts[1:]
        elif event == "start" and component == "watchdog" and (current := recent("watchdog", line.time)) is not None \
                and current.kind == "stop":
            attach(current, line)  # stopped and started again: one restart of the watchdog
            current.after.append(f"started again after {format_ms((line.time - current.started) * 1000)}"
                                 f" (pid {record.get('pid', '?')})")
        elif (window := events.window_opened_by(event)) is not None:
            incident = recent(component, line.time)
            if incident is None or incident.window_closed:
                incident = new(component, line, f"{window.opened} ({record.get('cause', '?')})")
            else:
                attach(incident, line)
            incident.window_open = True
        elif (window := events.window_closed_by(event)) is not None:
            incident = next((i for i in (recent(component, line.time), recent("watchdog", line.time))
                             if i is not None and not i.window_closed), None)
            if incident is None:
                incident = new(component, line, "")
            else:
                attach(incident, line)
                latest[component] = incident  # what reports on its window follows
            incident.window_open, incident.window_closed = False, True
            downtime = record.get("downtime_ms")
            incident.after.append((window.closed if incident.component == component else f"{component} {window.closed}")
                                  + (f" after {format_ms(float(downtime))}" if downtime else "")
                                  + ("" if incident.head else f" ({record.get('cause', '?')})"))
        elif (follow_up := events.follow_up(event)) is not None:
            key = (follow_up.event, *follow_up.key(record))
            incident = by_window.get(key) or recent(follow_up.owner(record), line.time)
            if incident is None:
                incident = new(component, line, "")
            else:
                attach(incident, line)
            by_window[key] = incident
            incident.follow_ups.setdefault(follow_up, []).append(record)
        elif event in ("alert", "crash_loop") and (current := recent(component, line.time)) is not None:
            attach(current, line)
            current.extras.extend(parts)
        else:
            new(component, line, parts[0], parts[1:])
    return result
