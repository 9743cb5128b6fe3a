"""What happened: one row per component, outages, restarts and the windows extensions declare, to scale, as SVG.

Built from the recovery log alone (plus what the extensions add: the windows
their events open and close, events.py, e.g. the bridge's disconnects, and
marks, e.g. the backfilled drops on their project's row), rendered on the server so that it
reads without JavaScript and a test can check it without a browser. Every
shape carries its cause as a `<title>` (the browser shows it on hover) and
as `data-kind`; a span too short to see at this scale is drawn MIN_PX wide
(kept inside the plot, not hidden under the "now" line at its edge). The thin
"up" line starts at the log's first record: before it nothing is known.
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from html import escape

from watchdog.commands.recoveries import DETECTIONS, Line, detection_text, group
from watchdog.control.console.events import NONE, Events
from watchdog.shared.human import format_ms

RANGES = {"1h": 3600, "24h": 86400, "7d": 7 * 86400}
DEFAULT_RANGE = "24h"
WIDTH, LABEL, PAD, ROW, AXIS = 1100, 190, 12, 26, 24
MIN_PX = 6.0  # a crash of a few ms in the 24 h view: still something to see and hover
MARK_PX = 2.0  # a restart tick
MERGE_PX = 3.0  # shapes of a row and kind closer than this are drawn as one (nobody tells them apart)
UP = "#7bc47f"  # the thin line of a row: up unless something is drawn over it
TICK_STEPS = (300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 86400)

# kind -> (fill, legend text): the same words the legend and the tooltips use
KINDS = {
    "crash": ("#d62728", "crashed / killed"),
    "hang": ("#ff7f0e", "hung or unhealthy"),
    "memory": ("#9467bd", "over its memory limit"),
    "planned": ("#4a90d9", "stopped by an operator"),
    "failed": ("#6b0000", "failed, not restarted"),
    "restart": ("#111111", "restart"),
    "unsupervised": ("#b0b4ba", "watchdog not running"),
}  # and the kinds the extensions declare (events.py)
MARK_FILL = "#1a9641"  # a shape of a kind nobody declared
EVERY_ROW = "*"  # a span drawn on every row (the watchdog itself was stopped)


@dataclass(frozen=True)
class Span:
    row: str
    start: float
    end: float
    kind: str  # a KINDS key or one an extension declared
    label: str


@dataclass(frozen=True)
class Mark:
    """A point on a row: a restart, or what an extension adds (a backfilled drop on its project's row)."""

    row: str
    time: float
    kind: str
    label: str


def _kind_of(opener: dict) -> str:
    event = opener.get("event")
    if event == "exit":
        return "crash"
    if event in ("hang", "unhealthy"):
        return "hang"
    if event == "rss_limit":
        return "memory"
    return "planned"


def spans_and_marks(records: list[dict], now: float, events: Events = NONE) -> tuple[list[Span], list[Mark]]:
    """Outages (detection -> healthy), failures, the declared windows and restart marks from the recovery log."""
    spans: list[Span] = []
    marks: list[Mark] = []
    down: dict[str, Span] = {}  # component -> its outage with no `healthy` yet (ends at the next one, or now)
    open_windows: dict[tuple[str, str], dict] = {}  # (row, window kind) -> the record that opened it
    failed_since: dict[str, dict] = {}
    watchdog_stopped: dict | None = None
    for line in group(records):
        outage = _recovery(line, now, marks)
        if outage is not None:
            pending = down.pop(outage.row, None)
            if pending is not None:  # it failed again before it was healthy: down all along
                outage = Span(outage.row, pending.start, outage.end, pending.kind, f"{pending.label}; then {outage.label}")
            if line.healthy is None and not any(r.get("event") == "failed" for r in line.records):
                down[outage.row] = outage
            else:
                spans.append(outage)
        for record in line.records:
            event, row, moment = record.get("event"), record.get("component", "?"), record.get("time", 0.0)
            opens, closes = events.window_opened_by(event), events.window_closed_by(event)
            if opens is not None:
                open_windows.setdefault((row, opens.kind), record)
            elif closes is not None:
                opened = open_windows.pop((row, closes.kind), None)
                downtime = float(record.get("downtime_ms") or 0) / 1000
                start = moment - downtime if downtime else (opened or record).get("time", moment)
                spans.append(Span(row, start, moment, closes.kind,
                                  f"{closes.opened} ({record.get('cause', '?')}) for {format_ms(downtime * 1000)}"))
            elif event == "stop" and row == "watchdog":
                watchdog_stopped = record
            elif event == "start" and row == "watchdog" and watchdog_stopped is not None:
                spans.append(Span(EVERY_ROW, watchdog_stopped["time"], moment, "unsupervised", "watchdog not running"))
                watchdog_stopped = None
            elif event == "failed":
                failed_since[row] = record
            elif event in ("restart", "healthy", "start") and row in failed_since:
                opened = failed_since.pop(row)
                spans.append(Span(row, opened["time"], moment, "failed", f"failed: {opened.get('cause', '?')}"))
    spans += down.values()
    for (row, kind), record in open_windows.items():
        opened = next(w.opened for w in events.windows if w.kind == kind)
        spans.append(Span(row, record["time"], now, kind, f"{opened} ({record.get('cause', '?')}), still open"))
    if watchdog_stopped is not None:
        spans.append(Span(EVERY_ROW, watchdog_stopped["time"], now, "unsupervised", "watchdog not running"))
    for row, record in failed_since.items():
        spans.append(Span(row, record["time"], now, "failed", f"failed: {record.get('cause', '?')}, not restarted"))
    return spans, marks


def _recovery(line: Line, now: float, marks: list[Mark]) -> Span | None:
    """The line's outage, from the detection to healthy (or to now while not healthy), which says how it was
    restarted; a restart nobody logged a detection for is a mark of its own."""
    opener = line.opener
    if opener is None or (opener.get("event") not in DETECTIONS and opener.get("event") != "stop") \
            or (opener.get("event") == "stop" and line.restart is None):  # a leftover or the shutdown: no outage
        if line.restart is not None:
            marks.append(Mark(line.component, line.restart.get("time", line.time), "restart",
                              " · ".join(line.parts())))
        return None
    failed = [r["time"] for r in line.records if r.get("event") == "failed"]
    end = line.healthy.get("time", now) if line.healthy is not None else failed[0] if failed else now
    label = detection_text(opener) if opener.get("event") in DETECTIONS else f"stopped ({opener.get('cause', '')})"
    return Span(line.component, line.time, end, _kind_of(opener), " · ".join([label, *line.parts()[1:]]))


def _ticks(since: float, until: float) -> Iterable[tuple[float, str]]:
    step = next((s for s in TICK_STEPS if (until - since) / s <= 12), TICK_STEPS[-1])
    local = datetime.fromtimestamp(since)
    offset = local.utcoffset().total_seconds() if local.utcoffset() else -time.timezone
    first = ((since + offset) // step + 1) * step - offset
    moment = first
    while moment < until:
        stamp = datetime.fromtimestamp(moment)
        yield moment, (f"{stamp:%a %d}" if step >= 86400 else f"{stamp:%H:%M}")
        moment += step


def svg(rows: list[str], spans: list[Span], marks: list[Mark], since: float, until: float,
        known_from: float = -math.inf, events: Events = NONE) -> str:
    """The timeline as one <svg> element; rows in the given order, anything on an unknown row added below.
    A declared window is a thin band under the row's outages (both can be at once).

    `known_from`: the first record of the recovery log (math.inf: none yet); no "up" line before it, since a
    fresh install was not up yesterday.
    """
    for extra in [s.row for s in spans] + [m.row for m in marks]:
        if extra not in rows and extra != EVERY_ROW:
            rows = [*rows, extra]
    kinds = {**KINDS, **events.kinds}
    bands = {window.kind for window in events.windows}
    height = AXIS + ROW * len(rows) + 6
    plot = WIDTH - LABEL - PAD

    def x(moment: float) -> float:
        return LABEL + (min(max(moment, since), until) - since) / (until - since) * plot

    def visible(left: float, right: float) -> tuple[float, float]:
        """At least MIN_PX wide, and inside the plot: a crash a moment ago is not a sliver under "now"."""
        right = max(right, left + MIN_PX)
        shift = max(0.0, right - x(until))
        return left - shift, right - shift

    out = [f'<svg class="timeline" viewBox="0 0 {WIDTH} {height}" width="100%" role="img" '
           f'aria-label="timeline of the last {format_ms((until - since) * 1000)}">']
    for n, row in enumerate(rows):
        y = AXIS + n * ROW
        out.append(f'<g class="row" data-row="{escape(row)}">'
                   f'<rect x="0" y="{y}" width="{WIDTH}" height="{ROW}" fill="{"#f4f5f7" if n % 2 else "#ffffff"}"/>'
                   f'<text x="6" y="{y + ROW * 0.68:.1f}" class="label">{escape(row)}</text>'
                   + (f'<rect class="up" x="{x(known_from):.1f}" y="{y + ROW * 0.42:.1f}" '
                      f'width="{x(until) - x(known_from):.1f}" height="3" fill="{UP}"/>' if known_from < until else "")
                   + '</g>')
    for moment, text in _ticks(since, until):
        px = x(moment)
        out.append(f'<line x1="{px:.1f}" y1="{AXIS - 4}" x2="{px:.1f}" y2="{height - 6}" class="tick"/>')
        if px < WIDTH - PAD - 20:  # a label at the very edge would be cut
            out.append(f'<text x="{px:.1f}" y="{AXIS - 8}" class="ticklabel">{text}</text>')
    shapes: dict[str, list[str]] = {}  # row -> its shapes, drawn in one <g data-row=...>
    for (row, kind), group_ in _by_row_and_kind([s for s in spans if s.end >= since and s.start <= until]).items():
        blobs = _coalesce([(*visible(x(s.start), x(s.end)), s) for s in group_])
        for left, right, members in blobs:
            title = escape(_title(members, until, kinds))
            if row == EVERY_ROW:
                out.append(f'<rect class="span" data-kind="{kind}" x="{left:.1f}" y="{AXIS}" '
                           f'width="{right - left:.1f}" height="{ROW * len(rows)}" fill="{kinds.get(kind, (MARK_FILL,))[0]}" '
                           f'fill-opacity="0.6"><title>{title}</title></rect>')
                continue
            n = rows.index(row)
            y, h = (AXIS + n * ROW + 3, ROW - 6) if kind not in bands else (AXIS + n * ROW + ROW * 0.55, ROW * 0.38)
            shapes.setdefault(row, []).append(
                f'<rect data-kind="{kind}" x="{left:.1f}" y="{y:.1f}" width="{right - left:.1f}" height="{h:.1f}" '
                f'fill="{kinds.get(kind, (MARK_FILL,))[0]}"><title>{title}</title></rect>')
    for (row, kind), group_ in _by_row_and_kind([m for m in marks if since <= m.time <= until]).items():
        y = AXIS + rows.index(row) * ROW
        for left, _, members in _coalesce([(x(m.time), x(m.time) + MARK_PX, m) for m in group_]):
            title = escape(_title(members, until, kinds))
            if kind == "restart":
                shapes.setdefault(row, []).append(
                    f'<path data-kind="restart" d="M{left:.1f} {y + 2} v{ROW - 4}" stroke="{KINDS["restart"][0]}" '
                    f'stroke-width="2"><title>{title}</title></path>')
            else:
                fill = kinds.get(kind, (MARK_FILL,))[0]
                shapes.setdefault(row, []).append(
                    f'<path data-kind="{escape(kind)}" d="M{left:.1f} {y + 4} l5 {ROW / 2 - 4:.1f} '
                    f'l-5 {ROW / 2 - 4:.1f} l-5 -{ROW / 2 - 4:.1f} z" fill="{fill}" stroke="#fff"><title>{title}</title>'
                    f'</path>')
    out += [f'<g class="marks" data-row="{escape(row)}">{"".join(drawn)}</g>' for row, drawn in shapes.items()]
    px = x(until)
    out.append(f'<line x1="{px:.1f}" y1="{AXIS - 4}" x2="{px:.1f}" y2="{height - 6}" class="now"/></svg>')
    return "".join(out)


def _by_row_and_kind(items: list) -> dict[tuple[str, str], list]:
    grouped: dict[tuple[str, str], list] = {}
    for item in items:
        grouped.setdefault((item.row, item.kind), []).append(item)
    return grouped


def _coalesce(shapes: list[tuple[float, float, object]]) -> list[tuple[float, float, list]]:
    """Shapes of one row and kind that would touch on screen become one, keeping what each was.

    A week of restarts is thousands of records; drawn one by one they are a smear of overlapping
    shapes and a page of megabytes. Merged, each visible shape says how many it stands for.
    """
    merged: list[tuple[float, float, list]] = []
    for left, right, item in sorted(shapes, key=lambda shape: shape[0]):
        if merged and left <= merged[-1][1] + MERGE_PX:
            first, last, members = merged[-1]
            merged[-1] = (first, max(last, right), [*members, item])
        else:
            merged.append((left, right, [item]))
    return merged


def _title(members: list, until: float, kinds: dict[str, tuple[str, str]]) -> str:
    """A tooltip: the one span or mark with its times, or how many there are and the first and last."""
    def one(item: Span | Mark) -> str:
        if isinstance(item, Mark):
            return f"{_clock(item.time)} {item.label}"
        end = "now" if item.end >= until else _clock(item.end)
        return f"{_clock(item.start)}–{end} {item.label}"
    if len(members) == 1:
        return one(members[0])
    return f"{len(members)}× {kinds.get(members[0].kind, ('', members[0].kind))[1]}: first {one(members[0])}; " \
           f"last {one(members[-1])}"


def legend(events: Events = NONE) -> str:
    """The colours as small SVG squares (no inline styles: the page's CSP allows none)."""
    return "".join(f'<span class="key"><svg width="12" height="12" aria-hidden="true"><rect width="12" height="12" '
                   f'fill="{fill}"/></svg> {escape(text)}</span>'
                   for fill, text in (*KINDS.values(), *events.kinds.values(), (UP, "up")))


def _clock(moment: float) -> str:
    return f"{datetime.fromtimestamp(moment):%H:%M:%S}"
