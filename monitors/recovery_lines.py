"""How `wa-watchdog recoveries` shows the monitors' reports on a window: the quiet ones folded into one line.

A recovery-lines fold of the drops' slice (`Component.recovery_folds`): every window is reported by every
project of its account, and a line each for "nothing" buries the one that found something.
"""
from __future__ import annotations

import re

from watchdog.commands.recoveries import Line

WINDOW = re.compile(r"^window \S+ \([^)]*\)")  # `window 22:07:01-22:07:40 (server disconnect)`


def fold_quiet_backfills(lines: list[Line]) -> list[Line]:
    """The monitors' reports on one window that found no drops, as one line: `3 projects missed nothing`."""
    out: list[Line] = []
    folded: dict[tuple[object, object], Line] = {}  # (account, window id) -> its one line
    for line in lines:
        record = line.records[0] if len(line.records) == 1 else {}
        if record.get("event") != "backfill" or "account" not in record or record.get("drops"):
            out.append(line)
            continue
        key = (record["account"], record.get("window_id"))
        if key not in folded:
            folded[key] = Line(line.time, "monitors")
            out.append(folded[key])
        quiet = folded[key]
        quiet.records.append(record)
        names = [str(r.get("component", "?")).removeprefix("monitor:") for r in quiet.records]
        window = WINDOW.match(str(record.get("message", "")))
        quiet.text = (f"backfill: {window.group(0) + ': ' if window else ''}{len(names)} project"
                      f"{'' if len(names) == 1 else 's'} missed nothing ({', '.join(names)})")
    return out
