"""The console's HTML, made with the standard library: a few panels of escaped text and one server-drawn SVG.

Each panel is a fragment function, used both for the whole page (which reads
without JavaScript) and for the live stream, which sends the same fragments
again when they change (`web.py`).
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from html import escape
from urllib.parse import quote

from watchdog.control.console import timeline
from watchdog.control.console.events import NONE, Events
from watchdog.control.console.extensions import Extension
from watchdog.control.console.incidents import Incident
from watchdog.control.console.view import Console, Row
from watchdog.shared import alert_rules, clock
from watchdog.shared.human import format_duration

INCIDENTS_SHOWN = 50  # newest; the rest are in `wa-watchdog recoveries`
STATE_CLASS = {"running": "ok", "starting": "warn", "backoff": "bad", "stopping": "warn", "exited": "bad",
               "failed": "bad", "stopped": "quiet"}


def _time(moment: float) -> str:
    stamp = datetime.fromtimestamp(moment)
    today = clock.local_now().date()
    return f"{stamp:%H:%M:%S}" if stamp.date() == today else f"{stamp:%a %d %b %H:%M:%S}"


def summary(rows: list[Row]) -> str:
    """The one line at the top: all well, or what is not."""
    unwell = [r for r in rows if not r.status.get("healthy")]
    firing = [(r.name, rule) for r in rows for rule in r.status.get("alerts") or []]
    parts = []
    if unwell:
        parts.append(f'<span class="bad">{len(unwell)} of {len(rows)} not healthy: '
                     f'{escape(", ".join(r.name for r in unwell))}</span>')
    else:
        parts.append(f'<span class="ok">all {len(rows)} components healthy</span>')
    if firing:
        parts.append('<span class="bad">alerts firing: ' +
                     escape(", ".join(f"{name} {rule.replace('_', ' ')}" for name, rule in firing)) + "</span>")
    else:
        parts.append('<span class="quiet">no alerts firing</span>')
    return f'<p class="summary" id="summary-line">{" · ".join(parts)}</p>'


def now_panel(rows: list[Row], csrf: str, extensions: Sequence[Extension] = ()) -> str:
    """Every component's row, and under it what an extension adds for it (the bridge's connection)."""
    out = [summary(rows), '<table class="now"><thead><tr><th>component</th><th>state</th><th>health</th>'
           '<th>pid</th><th>uptime</th><th>restarts 1 h</th><th>standby</th><th>last cause</th><th></th>'
           '</tr></thead><tbody>']
    for row in rows:
        s = row.status
        name = row.name
        healthy = s.get("healthy")
        state = str(s.get("state", "?"))
        condition = s.get("condition") or ""
        standby = s.get("standby_pid") if "standby_pid" in s else None
        alerts = "".join(f'<a class="alert" href="#do-{escape(rule)}" title="what to do">{escape(rule.replace("_", " "))}'
                         f'</a>' for rule in s.get("alerts") or [])
        out.append(
            f'<tr class="component" data-component="{escape(name)}" data-state="{escape(state)}" '
            f'data-pid="{s.get("pid") or ""}"><td class="name">{escape(name)}{alerts}</td>'
            f'<td><span class="badge {STATE_CLASS.get(state, "warn")}">{escape(state)}</span></td>'
            f'<td class="{"ok" if healthy else "bad"}">{"healthy" if healthy else "not healthy"}'
            f'{" (" + escape(condition) + ")" if condition and not healthy else ""}</td>'
            f'<td class="mono">{s.get("pid") or "-"}</td><td>{format_duration(s.get("uptime_s"))}</td>'
            f'<td class="{"bad" if row.restarts_last_hour else ""}">{row.restarts_last_hour}</td>'
            f'<td class="mono">{standby or ("-" if "standby_pid" in s else "")}</td>'
            f'<td>{escape(str(s.get("last_cause") or "-"))}</td>'
            f'<td>{restart_form(name, csrf)}</td></tr>')
        for extension in extensions:
            line = extension.row(s)
            if line:
                out.append(f'<tr class="{escape(extension.name)}" data-component="{escape(name)}"><td></td>'
                           f'<td colspan="8">{line}</td></tr>')
    out.append("</tbody></table>")
    out.append(what_to_do(rows))
    return "".join(out)


def what_to_do(rows: list[Row]) -> str:
    """Each firing rule once, with what to do first and where the runbook says the rest."""
    firing = dict.fromkeys(rule for row in rows for rule in row.status.get("alerts") or [])
    items = "".join(f'<li id="do-{escape(rule)}" data-rule="{escape(rule)}"><b>{escape(alert_rules.title(rule))}</b>: '
                    f'{_todo(rule)}</li>' for rule in firing)
    return f'<ul class="todo">{items}</ul>' if items else ""


def _todo(rule: str) -> str:
    """A registered rule's first step and runbook row; for a word its program's hook reported and no one
    registered, its log (the runbook has no row for it)."""
    registered = alert_rules.get(rule)
    if registered is None:
        return _code("not a registered alert rule: its program's health hook reported it; its log "
                     "(`wa-watchdog logs COMPONENT`) says more")
    return (f'{_code(registered.action)} <span class="quiet">(runbook: '
            f'<code>{escape(alert_rules.runbook_ref(rule))}</code>)</span>')


def _code(text: str) -> str:
    """Escaped text with its `commands` as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(text))


def restart_form(name: str, csrf: str) -> str:
    """A restart behind a confirmation that needs no JavaScript: the button is inside a closed <details>."""
    if not csrf:
        return '<a class="signin" href="/console/login">sign in to restart</a>'
    return (f'<details class="confirm" data-key="restart-{escape(name)}"><summary>restart…</summary>'
            f'<form method="post" action="/console/restart"><input type="hidden" name="component" '
            f'value="{escape(name)}"><input type="hidden" name="csrf" value="{escape(csrf)}">'
            f'<button type="submit" class="danger">restart {escape(name)} now</button></form></details>')


def timeline_panel(range_name: str, svg: str, events: Events = NONE) -> str:
    links = " ".join(f'<a href="/?range={r}"{" class=current" if r == range_name else ""}>{r}</a>'
                     for r in timeline.RANGES)
    return (f'<div class="ranges">last {links}</div>{svg}'
            f'<div class="legend">{timeline.legend(events)}</div>')


def incidents_panel(incidents: list[Incident], names: dict[str, str]) -> str:
    if not incidents:
        return '<p class="quiet">nothing in the recovery log yet</p>'
    shown = incidents[-INCIDENTS_SHOWN:][::-1]
    out = ['<ol class="incidents">']
    for incident in shown:
        raw = "\n".join(json.dumps(r, ensure_ascii=False) for r in incident.records)
        out.append(f'<li class="incident k-{escape(incident.kind)}"><details data-key="i-{incident.started:.6f}-'
                   f'{escape(incident.component)}"><summary><span class="when">{_time(incident.started)}</span> '
                   f'<b>{escape(incident.component)}</b> {escape(incident.summary(names))}</summary>'
                   f'<pre>{escape(raw)}</pre></details></li>')
    out.append("</ol>")
    older = len(incidents) - len(shown)
    if older:
        out.append(f'<p class="quiet">{older} older incidents: <code>wa-watchdog recoveries</code></p>')
    return "".join(out)


def logs_panel(tails: dict[str, list[str]]) -> str:
    out = []
    for name, lines in tails.items():
        last = lines[-1] if lines else "(no log yet)"
        out.append(f'<details class="log" data-key="log-{escape(name)}" data-component="{escape(name)}">'
                   f'<summary><b>{escape(name)}</b> <span class="mono">{escape(last[:160])}</span></summary>'
                   f'<pre>{escape(chr(10).join(lines))}</pre></details>')
    return "".join(out)


async def fragments(console: Console, range_name: str, csrf: str) -> dict[str, str]:
    """Every live panel by element id."""
    extras = await console.extras(range_name)
    svg, incidents = await console.history(range_name, extras, incidents_panel)
    return {"now": now_panel(console.rows(), csrf, console.extensions),
            "timeline": timeline_panel(range_name, svg, console.loaded.events),
            "incidents": incidents, "logs": logs_panel(console.log_tails()),
            **{f"x-{e.name}": extras.panels[e.name] for e in console.extensions if e.title and e.name in extras.panels}}


async def page(console: Console, range_name: str, csrf: str, flash: str = "") -> str:
    parts = await fragments(console, range_name, csrf)
    sections = [("now", "Now"), ("timeline", "What happened"), ("incidents", "Incidents")]
    sections += [(f"x-{e.name}", e.title) for e in console.extensions if e.title]
    sections += [("logs", "Logs")]
    body = "".join(f'<section><h2>{escape(title)}</h2><div id="{key}" class="panel">{parts[key]}</div></section>'
                   for key, title in sections)
    problems = "".join(f'<p class="bad">{escape(p)}</p>' for p in console.loaded.problems)
    return frame("wa-watchdog", f'{flash}{problems}{body}', range_name, live=True)


def frame(title: str, body: str, range_name: str = timeline.DEFAULT_RANGE, live: bool = False) -> str:
    script = '<script src="/console/static/console.js" defer></script>' if live else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{escape(title)}</title>'
            f'<link rel="stylesheet" href="/console/static/console.css">{script}</head>'
            f'<body data-range="{escape(range_name)}"><header><h1><a href="/">wa-watchdog</a></h1>'
            f'<span id="live" class="quiet">{"static page (reload to refresh)" if live else ""}</span>'
            f'<span class="quiet" id="updated">as of {clock.local_now():%H:%M:%S}</span></header>'
            f'<main>{body}</main></body></html>')


def flash(query: dict[str, str]) -> str:
    if "restarted" in query:
        return (f'<p class="flash ok" id="flash">restarted {escape(query["restarted"])}: pid '
                f'{escape(query.get("old", "-"))} → {escape(query.get("pid", "-"))}</p>')
    if "error" in query:
        return f'<p class="flash bad" id="flash">{escape(query["error"])}</p>'
    return ""


def restarted_location(result: dict) -> str:
    return (f'/?restarted={quote(str(result.get("name", "")))}&old={quote(str(result.get("old_pid") or "-"))}'
            f'&pid={quote(str(result.get("pid") or "-"))}')


def detail_page(title: str, html: str) -> str:
    return frame(title, f'<section><h2>{escape(title)}</h2><div class="panel">{html}</div></section>')


def login_page(control_token: bool, message: str = "") -> str:
    """Sign in with the control token, or (without one) the restart token the watchdog keeps in run/control.token."""
    note = f'<p class="bad">{escape(message)}</p>' if message else ""
    which = ("the value of <code>watchdog.control_token</code>" if control_token else
             "the restart token: <code>sudo cat &lt;data_dir&gt;/run/control.token</code> (new at every watchdog "
             "start; reading the console needs none)")
    return frame("wa-watchdog: sign in", f'<section><h2>Sign in</h2>{note}<form method="post" '
                 f'action="/console/login"><label>token <input type="password" name="token" '
                 f'autocomplete="current-password" autofocus></label> <button type="submit">sign in</button>'
                 f'</form><p class="quiet">{which}</p></section>')
