"""The bridge's part of the console: its WhatsApp connection under each bridge's row, and its disconnect windows.

Named in the bridge's slice (`console_views` in bridge/component.py;
`watchdog/control/console/extensions.py` describes the interface), so the
console draws a connection and a disconnect window without knowing what
WhatsApp is. It has no panel of its own.
"""
from __future__ import annotations

from html import escape

from watchdog.components import Config
from watchdog.control.console.events import Events, Window
from watchdog.control.console.extensions import Extension
from bridge.alert_rules import not_in_text
from watchdog.shared.human import format_duration

# The bridge logs `disconnect` when its WhatsApp connection drops (or it crashed) and `reconnect` with the
# window's `downtime_ms` when it is back: a band on its row and a step of the incident.
EVENTS = Events(kinds={"disconnect": ("#e6b800", "WhatsApp disconnected")},
                windows=(Window("disconnect", "reconnect", "disconnect", "disconnected", "reconnected"),))


def connection_line(connection: dict | None) -> str:
    """The bridge's health answer's `connection` as one line: state, open window, outbox and its pace, groups it is
    not in."""
    if connection is None:
        return '<div class="conn bad">WhatsApp: no health answer</div>'
    window = connection.get("open_window")
    parts = [f'<b class="{"ok" if connection.get("connected") else "bad"}">'
             f'{"connected" if connection.get("connected") else escape(str(connection.get("state") or "disconnected"))}'
             f'</b>']
    if connection.get("reason") and not connection.get("connected"):
        parts.append(escape(str(connection["reason"])))
    if isinstance(window, dict):
        parts.append(f'<span class="warn">disconnect window open since '
                     f'{escape(str(window.get("started_at", "?"))[11:19])} UTC ({escape(str(window.get("reason", "")))})'
                     f'</span>')
    else:
        parts.append("no open window")
    parts.append(f'outbox {escape(str(connection.get("outbox_depth", "?")))}')
    sending = connection.get("sending")  # the pace and WhatsApp's limits (bridge/pace.py, bridge/send_pause.py)
    if isinstance(sending, dict) and sending.get("paused"):
        parts.append(f'<span class="warn">sending paused until {escape(str(sending.get("until") or "?"))} '
                     f'({escape(str(sending.get("reason") or ""))})</span>')
    elif isinstance(sending, dict) and sending.get("depth"):
        parts.append(f'next send {escape(str(sending.get("next_send_at") or "?")[11:19])} UTC, '
                     f'drained in ~{format_duration(sending.get("drain_s") or 0)}')
    for item in connection.get("not_in_groups") or []:  # a project follows a group the number is not in
        text = not_in_text(str(connection.get("account") or "?"), str(item.get("group")), list(item.get("projects") or []))
        parts.append(f'<span class="bad">{escape(text)}</span>')
    age = connection.get("last_event_age_s")
    parts.append(f"last event {format_duration(age) if age is not None else '-'} ago")
    return f'<div class="conn">WhatsApp: {" · ".join(parts)}</div>'


class ConnectionView(Extension):
    name = "connection"  # also the class of its rows in the Now panel (console.css)
    title = ""  # no panel
    events = EVENTS

    def __init__(self, config: Config) -> None:
        self.config = config

    def row(self, status: dict) -> str:
        """A bridge's status item carries `connection` (its health answer's; None while it gives none)."""
        return connection_line(status.get("connection")) if "connection" in status else ""
