"""`wa-watchdog status` and `wa-watchdog restart NAME`: ask the running watchdog over its control API.

A blocking stdlib HTTP client: a CLI that asks one question needs no event
loop. The URL comes from the watchdog's published endpoints, never from the
config, because the control port may be 0 (any free port).
"""
from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request

from watchdog import endpoints
from watchdog.config import Config

TIMEOUT = 15.0  # a restart answers once the new process is started


class ControlError(Exception):
    """Why the control API could not answer; printed as is, exit 1."""


def _request(config: Config, method: str, path: str) -> object:
    published = endpoints.run_dir(config.data_dir) / "watchdog.json"
    base = endpoints.url(config.data_dir, "watchdog", "control")
    if not base:
        raise ControlError(f"watchdog is not running (no control endpoint in {published})")
    request = urllib.request.Request(base + path, method=method, data=b"" if method == "POST" else None)
    if method == "POST":  # else urllib declares a form body, which the API refuses as a possible browser forgery
        request.add_header("Content-Type", "application/json")
    if config.watchdog.control_token:
        request.add_header("Authorization", f"Bearer {config.watchdog.control_token}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise ControlError(f"the watchdog at {base} refused the request: watchdog.control_token in "
                               f"{config.path} does not match the running watchdog's") from None
        raise ControlError(_error_text(exc)) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            raise ControlError(f"watchdog is not running (nothing answers at {base}, published in {published})") from None
        raise ControlError(f"cannot reach the watchdog at {base}: {exc.reason}") from None
    except TimeoutError:
        raise ControlError(f"the watchdog at {base} did not answer within {TIMEOUT:.0f} s") from None


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        return json.loads(exc.read())["error"]
    except (ValueError, KeyError, TypeError):
        return f"control API answered HTTP {exc.code} {exc.reason}"


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


def status_table(components: list[dict]) -> str:
    header = ("NAME", "PID", "STATE", "HEALTHY", "UPTIME", "RESTARTS", "LAST CAUSE", "STANDBY", "ENDPOINTS")
    rows = [header]
    for c in components:
        healthy = c.get("healthy")
        rows.append((
            str(c.get("name", "?")),
            str(c.get("pid") or "-"),
            str(c.get("state", "?")),
            "yes" if healthy else ("no" if healthy is not None else "-"),
            format_duration(c.get("uptime_s")),
            str(c.get("restarts", 0)),
            str(c.get("last_cause") or "-"),
            str(c.get("standby_pid") or "-"),  # a bridge's warm standby, waiting on the session lock
            " ".join(f"{k}={v}" for k, v in (c.get("endpoints") or {}).items()) or "-",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1] for row in rows]
    status_lines = [f"  {c['name']}: {c['status_text']}" for c in components if c.get("status_text")]
    return "\n".join(lines + (["", "status:", *status_lines] if status_lines else []))


def cmd_status(config: Config, args: argparse.Namespace) -> int:
    try:
        components = _request(config, "GET", "/status")
    except ControlError as exc:
        print(f"wa-watchdog status: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(components, indent=2) if args.json else status_table(components))
    return 0


def cmd_restart(config: Config, args: argparse.Namespace) -> int:
    try:
        result = _request(config, "POST", f"/restart/{urllib.request.quote(args.component, safe=':')}")
    except ControlError as exc:
        print(f"wa-watchdog restart: {exc}", file=sys.stderr)
        return 1
    print(f"restarted {args.component}: pid {result.get('old_pid') or '-'} -> {result.get('pid') or '-'}"
          f" ({result.get('state', '?')})")
    return 0

