"""`wa-watchdog status` and `wa-watchdog restart NAME`: ask the running watchdog over its control API.

A blocking stdlib HTTP client: a CLI that asks one question needs no event
loop. The URL comes from the watchdog's published endpoints, never from the
config, because the control port may be 0 (any free port). The bearer token
is `watchdog.control_token` if configured, else the running watchdog's
`run/control.token` (readable by the service user and root only).
"""
from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request

from watchdog import control_token, endpoints
from watchdog.config import Config
from watchdog.exitcodes import EXIT_CONFIG

TIMEOUT = 15.0  # a restart answers once the new process is started


class ControlError(Exception):
    """Why the control API could not answer; printed as is, exit 1."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status of a refusal, 0 if there was no answer


def _request(config: Config, method: str, path: str) -> object:
    published = endpoints.run_dir(config.data_dir) / "watchdog.json"
    base = endpoints.url(config.data_dir, "watchdog", "control")
    if not base:
        raise ControlError(f"watchdog is not running (no control endpoint in {published})")
    request = urllib.request.Request(base + path, method=method, data=b"" if method == "POST" else None)
    if method == "POST":  # else urllib declares a form body, which the API refuses as a possible browser forgery
        request.add_header("Content-Type", "application/json")
    token, unreadable = config.watchdog.control_token, ""
    if not token:
        try:
            token = control_token.read(config.data_dir)
        except PermissionError:
            unreadable = (f"; {control_token.path(config.data_dir)} is readable only by the service user "
                          "(run this as that user or root)")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            where = (f"watchdog.control_token in {config.path}" if config.watchdog.control_token
                     else f"the token in {control_token.path(config.data_dir)}")
            raise ControlError(f"the watchdog at {base} refused the request: {where} does not match the running "
                               f"watchdog's{unreadable}") from None
        raise ControlError(_error_text(exc), exc.code) from None
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


def config_line(info: dict) -> str:
    """`config /etc/wa-watchdog/config.toml sha256 3f2a9c01d4e5 loaded 2h05m ago (1 reload)`."""
    reloads = info.get("reloads", 0)
    return (f"config {info.get('path', '?')} sha256 {str(info.get('sha256', ''))[:12] or '-'} loaded "
            f"{format_duration(info.get('age_s'))} ago ({reloads} reload{'' if reloads == 1 else 's'})")


def cmd_status(config: Config, args: argparse.Namespace) -> int:
    try:
        components = _request(config, "GET", "/status")
        info = None if args.json else _request(config, "GET", "/config")
    except ControlError as exc:
        print(f"wa-watchdog status: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(components, indent=2) if args.json else config_line(info) + "\n\n" + status_table(components))
    return 0


def cmd_reload(config: Config, args: argparse.Namespace) -> int:
    """Ask the running watchdog to read its config again; exit 2 (nothing changed) if it is invalid."""
    try:
        result = _request(config, "POST", "/reload")
    except ControlError as exc:
        if exc.status == 400:
            print(f"wa-watchdog reload: configuration error, the running configuration stays: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        print(f"wa-watchdog reload: {exc}", file=sys.stderr)
        return 1
    changes = [f"{what} {', '.join(result[what])}" for what in ("added", "removed", "changed") if result.get(what)]
    print(f"reloaded {config.path} (sha256 {result.get('sha256', '')[:12]}): {'; '.join(changes) or 'nothing changed'}")
    if result.get("not_applied"):
        print(f"not applied until the watchdog restarts: {', '.join(result['not_applied'])}")
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

