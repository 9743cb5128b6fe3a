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
import math
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable

import psutil

from watchdog.control import token as control_token
from watchdog.shared import endpoints
from watchdog.shared.component import StatusSection
from watchdog.shared.config import Config
from watchdog.shared.exitcodes import EXIT_CONFIG
from watchdog.shared.human import format_duration, unknown_components
from watchdog.core.stale import recorded_children, runs, standby_name

TIMEOUT = 15.0  # a restart answers once the new process is started
STATUS_TIMEOUT = 2.0  # a status answers at once, unless the watchdog is frozen or wedged
CAUSE_WIDTH = 40  # LAST CAUSE is cut here in the table; --json has it whole


class ControlError(Exception):
    """Why the control API could not answer; printed as is, exit 1."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status of a refusal, 0 if there was no answer


def _watchdog_pid(config: Config) -> int | None:
    record = endpoints.read(config.data_dir, "watchdog")
    pid = record.get("pid") if record else None
    return pid if isinstance(pid, int) else None


def _stopped(pid: int | None) -> bool:
    try:
        return pid is not None and psutil.Process(pid).status() == psutil.STATUS_STOPPED
    except psutil.Error:
        return False


def _not_answering(base: str, pid: int | None, timeout: float | None) -> ControlError:
    """A watchdog that does not answer: say whether its process is stopped (SIGSTOP) or busy."""
    waited = f" within {timeout:g} s" if timeout else ""
    if pid is None:
        return ControlError(f"the watchdog at {base} is not answering{waited}")
    try:
        state = psutil.Process(pid).status()
    except psutil.Error:
        return ControlError(f"the watchdog at {base} is not answering{waited}; its pid {pid} is gone")
    if state == psutil.STATUS_STOPPED:
        return ControlError(f"the watchdog (pid {pid}) at {base} is not answering: its process is stopped "
                            f"(SIGSTOP or a debugger); `kill -CONT {pid}` resumes it, under systemd WatchdogSec "
                            "replaces it")
    return ControlError(f"the watchdog (pid {pid}) at {base} is not answering{waited}; its process is {state} "
                        "(not stopped: busy or wedged; under systemd WatchdogSec replaces a wedged one)")


def _request(config: Config, method: str, path: str, timeout: float = TIMEOUT) -> object:
    published = endpoints.run_dir(config.data_dir) / "watchdog.json"
    base = endpoints.url(config.data_dir, "watchdog", "control")
    if not base:
        raise ControlError(f"watchdog is not running (no control endpoint in {published})" + leftovers_text(config))
    pid = _watchdog_pid(config)
    if _stopped(pid):  # no need to wait out a timeout to know it cannot answer
        raise _not_answering(base, pid, None)
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
        with urllib.request.urlopen(request, timeout=timeout) as response:
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
            raise ControlError(f"watchdog is not running (nothing answers at {base}, published in {published})"
                               + leftovers_text(config)) from None
        if isinstance(exc.reason, TimeoutError):
            raise _not_answering(base, pid, timeout) from None
        raise ControlError(f"cannot reach the watchdog at {base}: {exc.reason}") from None
    except TimeoutError:
        raise _not_answering(base, pid, timeout) from None


def _component_in(cmdline: list[str], config: Config) -> str:
    """The program whose signature the command line carries (what the arbiter starts), the most specific
    first (`bridge --account x` before a bare `sim`); its standby is named apart."""
    programs = sorted([*config.builtin_programs(), *config.programs],
                      key=lambda program: -sum(map(len, program.leftover_signature)))
    name = next((program.name for program in programs if runs(cmdline, program.leftover_signature)), None)
    if name is not None:
        return standby_name(name) if "--standby" in cmdline else name
    return "run" if "run" in cmdline else "?"


def leftovers(config: Config) -> list[tuple[int, str]]:
    """Live wa-watchdog processes that use this data directory while no watchdog answers: (pid, component).

    Found by the `--data-dir` the watchdog passes to every child; named as in the list of children it recorded.
    """
    data_dir = str(config.data_dir)
    recorded = {pid: name for name, pid in recorded_children(config.data_dir).items() if isinstance(pid, int)}
    found: dict[int, str] = {}
    for process in psutil.process_iter(["pid", "cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        ours = "watchdog.cli" in cmdline[:3] or any(word.endswith("/wa-watchdog") for word in cmdline[:2])
        if not ours or process.info["status"] == psutil.STATUS_ZOMBIE or process.info["pid"] == os.getpid():
            continue
        if any(cmdline[i:i + 2] == ["--data-dir", data_dir] for i in range(len(cmdline) - 1)):
            found[process.info["pid"]] = recorded.get(process.info["pid"]) or _component_in(cmdline, config)
    return sorted(found.items(), key=lambda item: item[1])


def leftovers_text(config: Config) -> str:
    found = leftovers(config)
    if not found:
        return ""
    rows = "\n".join(f"  pid {pid:<8} {name}" for pid, name in found)
    return (f"\n{len(found)} process{'es' if len(found) != 1 else ''} left over from an earlier watchdog still "
            f"use {config.data_dir}:\n{rows}\nthe next watchdog stops them before it starts its own "
            f"(systemctl start wa-watchdog); to end them now: kill {' '.join(str(pid) for pid, _ in found)}")


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        return json.loads(exc.read())["error"]
    except (ValueError, KeyError, TypeError):
        return f"control API answered HTTP {exc.code} {exc.reason}"


def _cut(text: str, width: int = CAUSE_WIDTH) -> str:
    return text if len(text) <= width else text[:width - 1].rstrip() + "…"


def _state(component: dict) -> str:
    """`backoff 3s` while waiting out a restart delay: when the next try is."""
    state = str(component.get("state", "?"))
    next_in = component.get("next_start_in_s")
    return f"{state} {format_duration(math.ceil(next_in))}" if state == "backoff" and next_in is not None else state


def status_table(components: list[dict]) -> str:
    header = ("NAME", "PID", "STATE", "HEALTHY", "UPTIME", "RESTARTS", "LAST CAUSE", "STANDBY", "ENDPOINTS")
    rows = [header]
    for c in components:
        healthy = c.get("healthy")
        rows.append((
            str(c.get("name", "?")),
            str(c.get("pid") or "-"),
            _state(c),
            "yes" if healthy else ("no" if healthy is not None else "-"),
            format_duration(c.get("uptime_s")),
            str(c.get("restarts", 0)),
            _cut(str(c.get("last_cause") or "-")),
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


def cmd_status(config: Config, args: argparse.Namespace,
               sections: Callable[[list[dict]], list[StatusSection]] = lambda running: []) -> int:
    """The running watchdog's components, then what the product adds (`sections`, asked after the watchdog
    answered, given its status items). `--json`: the list of components; with sections, {"components": [...],
    <name>: <data>, ...}."""
    try:
        components = _request(config, "GET", "/status", STATUS_TIMEOUT)
        info = None if args.json else _request(config, "GET", "/config", STATUS_TIMEOUT)
    except ControlError as exc:
        print(f"wa-watchdog status: {exc}", file=sys.stderr)
        return 1
    added = sections(components)
    if args.json:
        data = {s.name: s.data for s in added if s.data is not None}
        whole = {"components": components, **data} if data else components
        print(json.dumps(whole, indent=2))
    else:
        print("\n\n".join([config_line(info), status_table(components), *("\n".join(s.lines) for s in added)]))
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
        # Ask for the names first (answers in STATUS_TIMEOUT): a typo is answered with the valid names,
        # and a frozen or wedged watchdog is named in 2 s instead of after the restart's 15 s.
        names = [str(c.get("name")) for c in _request(config, "GET", "/status", STATUS_TIMEOUT)]
        if args.component not in names:
            raise ControlError(unknown_components([args.component], names))
        result = _request(config, "POST", f"/restart/{urllib.request.quote(args.component, safe=':')}")
    except ControlError as exc:
        print(f"wa-watchdog restart: {exc}", file=sys.stderr)
        return 1
    print(f"restarted {args.component}: pid {result.get('old_pid') or '-'} -> {result.get('pid') or '-'}"
          f" ({result.get('state', '?')})")
    return 0
