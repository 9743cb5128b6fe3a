"""`wa-watchdog recoveries`: the recovery log as one readable line per recovery.

Written for the operator woken at 3 a.m.: what broke, how it was detected,
and how long until it worked again. The watchdog logs a recovery as separate
records (exit or hang -> restart -> healthy); they are joined back here by
component and pid into one line:

    22:01:03 bridge:main killed by SIGKILL · restarted in 3 ms · healthy after 0.41 s

Everything else (crash loops, alerts, disconnects, backfills) is one line each.

While a component is crash-looping, a process that came up and died again is
not "healthy": from a `crash_loop` record until a process stays up for
`STABLE_S`, the line says how long it lasted ("up after 2.3 s, ended again
after 0.8 s (crash loop)") or that it is not yet stable.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from datetime import datetime

from watchdog.shared.config import Config
from watchdog.shared.human import format_ms, parse_since, unknown_components
from watchdog.shared.recovery_log import RecoveryLog
from watchdog.shared import clock


# Records that open a recovery: how the watchdog noticed something was wrong.
DETECTIONS = {"exit", "hang", "unhealthy", "rss_limit"}
STABLE_S = 60.0  # up this long ends a crash loop (the watchdog's default backoff_reset_after)


def detection_text(record: dict) -> str:
    cause = record.get("cause") or ""
    event = record["event"]
    if event == "exit":
        if cause.startswith("SIG"):
            return f"killed by {cause}"
        if cause.startswith("exit code"):
            return f"exited with code {cause.removeprefix('exit code').strip()}"
        return f"exited ({cause})" if cause else "exited"
    label = {"hang": "hang", "unhealthy": "unhealthy", "rss_limit": "over its memory limit"}[event]
    return f"{label} ({cause})" if cause else label


def event_text(record: dict) -> str:
    """One line's text for a record that is not part of a recovery."""
    event = record["event"]
    cause = record.get("cause")
    message = record.get("message")
    if event == "alert":
        text = f"alert {record.get('status', '?')} {record.get('rule', '?')}: {record.get('summary', '')}"
    elif event == "crash_loop":
        text = "crash loop" + (f" ({cause})" if cause else "")
        if record.get("backoff_s") is not None:
            text += f" · backing off, next in {format_ms(float(record['backoff_s']) * 1000)}"
    elif event == "failed":
        text = "failed, not restarted" + (f": {cause}" if cause else "")
    elif event == "restart":
        text = f"restarted (pid {record.get('pid', '?')} -> {record.get('new_pid', '?')})"
        text += f" ({cause})" if cause else ""
    elif event == "healthy":
        text = f"healthy (pid {record.get('pid', '?')})"
    elif event in ("start", "stop"):
        details = [f"pid {record['pid']}"] if "pid" in record else []
        details += [cause] if cause else []
        text = {"start": "started", "stop": "stopped"}[event] + (f" ({', '.join(details)})" if details else "")
    elif event == "reload":
        text = "config reloaded" + (f" ({cause})" if cause else "")
    elif event == "overloaded":
        text = "overloaded, not hung: given time" + (f" ({cause})" if cause else "")
    elif event == "throttle":
        text = "start delayed" + (f": {cause}" if cause else "")
    else:
        text = event
    if message:
        text += f": {message}"
    reason = record.get("reason")
    if reason and reason != message:
        text += f" (reason: {reason})"
    return text


@dataclass
class Line:
    """One output line: a lone event (`text`), or a recovery opened by `opener` and joined with its restart/healthy."""

    time: float
    component: str
    text: str = ""
    opener: dict | None = None
    restart: dict | None = None
    healthy: dict | None = None
    extras: list[str] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)  # every record joined into this line, oldest first
    looping: bool = False  # the component was crash-looping when this process came up
    lasted_s: float | None = None  # how long the healthy process lasted (None: still up, or unknown)

    def render(self) -> str:
        return " · ".join(self.parts())

    def parts(self) -> list[str]:
        """The steps of the line: detection, restart, healthy (or the one text of a lone event)."""
        if self.opener is None and self.restart is None:
            return [self.text]
        parts = [self._opening(), *self.extras]
        if self.restart is not None and self.opener is not None:
            parts.append("restarted" + self._restart_timing())
        if self.healthy is not None:
            parts.append(self._healthy_text())
        elif self.restart is None and not self.extras and self.opener["event"] in DETECTIONS:
            parts.append("not restarted yet")
        return parts

    def _healthy_text(self) -> str:
        downtime = self.healthy.get("downtime_ms")
        after = f" after {format_ms(float(downtime))}" if downtime is not None else ""
        if self.lasted_s is not None and self.lasted_s < STABLE_S and self.looping:
            return f"up{after}, ended again after {format_ms(self.lasted_s * 1000)} (crash loop)"
        if self.looping and self.lasted_s is None and clock.now_s() - self.healthy.get("time", 0.0) < STABLE_S:
            return f"up{after}, not yet stable (crash loop)"
        return f"healthy{after}"

    def _opening(self) -> str:
        if self.opener is None:  # a restart nobody logged a detection for (an operator's)
            cause = self.restart.get("cause")
            return "restarted" + (f" ({cause})" if cause else "") + self._restart_timing()
        if self.opener["event"] in DETECTIONS:
            return detection_text(self.opener)
        return event_text(self.opener)

    def _restart_timing(self) -> str:
        text = ""
        if self.restart.get("restart_ms") is not None:
            text += f" in {format_ms(float(self.restart['restart_ms']))}"
        if self.restart.get("delay_ms"):
            text += f" (backoff {format_ms(float(self.restart['delay_ms']))})"
        if self.restart.get("standby"):
            text += " by its warm standby"
        return text


def group(records: list[dict]) -> list[Line]:
    """Join each component's detection -> restart -> healthy records into one Line; others stay one Line each.

    A recovery opens with a detection (exit, hang, unhealthy, rss_limit), a stop
    (an operator restart stops the child first) or a restart without either.
    The exit of a pid already being recovered is the watchdog's own SIGTERM or
    SIGKILL of a hung child: it adds nothing and is left out.
    """
    lines: list[Line] = []
    open_recovery: dict[str, Line] = {}  # component -> its recovery still waiting for restart/healthy
    last_up: dict[str, Line] = {}  # component -> its latest recovery that ended healthy
    looping: set[str] = set()  # components in a crash loop (until a process stays up STABLE_S)
    for record in records:
        component = record.get("component", "?")
        event = record.get("event")
        current = open_recovery.get(component)
        pid = record.get("pid")
        up = last_up.get(component)
        if up is not None and up.lasted_s is None and event in DETECTIONS and pid == up.healthy.get("pid"):
            up.lasted_s = record.get("time", 0.0) - up.healthy.get("time", 0.0)
            if up.lasted_s >= STABLE_S:
                looping.discard(component)
        if event == "crash_loop":
            looping.add(component)
            if up is not None and (up.lasted_s or 0.0) < STABLE_S:
                up.looping = True  # the brief recovery whose end started the loop
        if current is not None and current.restart is None and current.opener is not None and pid is not None \
                and pid == current.opener.get("pid") and event in DETECTIONS | {"stop"}:
            if event not in ("exit", "stop"):
                current.extras.append(detection_text(record))  # another check fired on the same child
            current.records.append(record)
            continue
        if event in DETECTIONS or event == "stop":
            line = Line(record.get("time", 0.0), component, opener=record)
        elif event == "restart" and current is not None and current.restart is None \
                and pid in (current.opener.get("pid"), None):
            current.restart = record
            current.records.append(record)
            continue
        elif event == "restart":
            line = Line(record.get("time", 0.0), component, restart=record)
        elif (event == "healthy" and current is not None and current.restart is not None
              and pid in (current.restart.get("new_pid"), None)):
            current.healthy = record
            current.records.append(record)
            current.looping = component in looping
            last_up[component] = current
            del open_recovery[component]
            continue
        elif event == "failed" and current is not None and current.restart is None:
            current.extras.append(event_text(record))  # exit code 2 -> failed: one line says it all
            current.records.append(record)
            del open_recovery[component]
            continue
        else:
            lines.append(Line(record.get("time", 0.0), component, text=event_text(record), records=[record]))
            continue
        line.records.append(record)
        lines.append(line)
        open_recovery[component] = line
    return lines


def render(lines: list[Line]) -> str:
    """Lines with local HH:MM:SS times and a date header whenever the day changes."""
    out: list[str] = []
    day = None
    for line in lines:
        moment = datetime.fromtimestamp(line.time)
        if moment.date() != day:
            day = moment.date()
            out.append(f"-- {day.isoformat()} --")
        out.append(f"{moment:%H:%M:%S} {line.component} {line.render()}")
    return "\n".join(out)


def cmd_recoveries(config: Config, args: argparse.Namespace) -> int:
    try:
        since = clock.now_s() - parse_since(args.since) if args.since else 0.0
    except ValueError as exc:
        print(f"wa-watchdog recoveries: {exc}", file=sys.stderr)
        return 1
    log = RecoveryLog(config.watchdog.recovery_log)
    everything = sorted(log.read(since), key=lambda r: r.get("time", 0.0))  # a planned stop is dated when it began
    if args.component:
        from watchdog.components import all_programs  # here: the console (control side) imports this module
        known = list(dict.fromkeys(["watchdog", *(p.name for p in all_programs(config)),
                                    *(str(r.get("component")) for r in everything)]))
        if args.component not in known:
            print(f"wa-watchdog recoveries: {unknown_components([args.component], known)}", file=sys.stderr)
            return 1
    records = [r for r in everything if not args.component or r.get("component") == args.component]
    if args.json:
        print(json.dumps(records, ensure_ascii=False, indent=2))
        return 0
    if not records:
        scope = f" for {args.component}" if args.component else ""
        window = f" in the last {args.since}" if args.since else ""
        print(f"no recoveries{scope}{window} (log: {log.path})")
        return 0
    lines = group(records)
    from watchdog.components import recovery_folds  # the slices' own foldings (see cmd above for why here)
    for fold in recovery_folds():
        lines = fold(lines)
    print(render(lines))
    return 0
