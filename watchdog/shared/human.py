"""Durations, counts and names as the operator reads them, in the same words wherever they are told.

Its own small module because the bridge and the monitors write these words
into the recovery log too, and must not pay for the views' imports.
"""
from __future__ import annotations

import difflib
import re

SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def format_ms(ms: float) -> str:
    """3 ms, 0.41 s, 2.1 s, 45 s, 3 min 20 s: precise where it matters, short where it does not."""
    if ms < 100:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60)} s"


def counts_text(recovered: int, late: int) -> str:
    """`2 recovered from history, 13 delivered late`: a window's messages in the same words wherever they are
    told (the bridge's backfill line, each monitor's, the console's incidents)."""
    return f"{recovered} recovered from history, {late} delivered late"


def unknown_components(asked: list[str], known: list[str]) -> str:
    """`no component named bridge; did you mean bridge:main? (components: ...)`: what restart, logs and
    recoveries answer a name they do not know."""
    close = [match for name in asked for match in difflib.get_close_matches(name, known, n=1)]
    if not close:  # `bridge` for `bridge:main`: the account part left out
        close = [name for name in known for prefix in asked if name.startswith(prefix + ":")][:1]
    return (f"no component named {', '.join(asked)}" + (f"; did you mean {' or '.join(close)}?" if close else "")
            + f" (components: {', '.join(known)})")


def parse_since(text: str) -> float:
    """'30s', '15m', '1h', '2d' -> seconds; ValueError with the expected format otherwise."""
    match = SINCE.match(text)
    if not match:
        raise ValueError(f"--since {text!r}: expected a number and a unit s, m, h or d (e.g. 30s, 15m, 1h, 2d)")
    return float(match.group(1)) * UNIT_SECONDS[match.group(2)]


def format_duration(seconds: float | None) -> str:
    """Compact uptime: 41s, 12m05s, 3h12m, 2d04h."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def table_lines(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """A plain-text table for `wa-watchdog status`'s sections: columns padded, each line indented two spaces."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
