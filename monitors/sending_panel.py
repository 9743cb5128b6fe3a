"""Sending per account (issue 22), in the console and `wa-watchdog status`: is each number sending or paused, why and
until when, its queue and when that is expected out, and which number each project's feedback goes through now.

Everything comes from the bridges' last health answers as the watchdog's status carries them (`connection`,
bridge/supervision.py): the state, its reason (a temporary ban names WhatsApp's code and its expiry), and `sending`
(the pause, the outbox's depth, the next send, the drain time: bridge/outbox.py). A project's number is judged by the
failover rule the monitor applies before each post (monitors/failover.py `why_not`), so the panel says where the
next feedback goes, and why not through the numbers before it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from html import escape

from bridge.config import account_component
from monitors.failover import CONNECTED, why_not
from watchdog.components import Config
from watchdog.control.console.events import NONE
from watchdog.control.console.extensions import Extension
from watchdog.shared import clock
from watchdog.shared.component import StatusSection
from watchdog.shared.human import format_duration, table_lines

SENDING, PAUSED, STOPPED, UNKNOWN = "sending", "paused", "stopped", "unknown"
AWAY = ("disconnected", "connecting")


@dataclass(frozen=True)
class AccountSending:
    """One number as its bridge last told it."""

    account: str
    phone: str
    sending: str  # SENDING | PAUSED (it resumes by itself) | STOPPED (an operator must act) | UNKNOWN (no answer)
    why: str  # '' while sending
    until: str | None  # ISO UTC when it may send again, if known
    queue: int | None  # the outbox's depth
    drain_s: float | None  # seconds until the outbox is expected empty at the pace
    next_send_at: str | None  # ISO UTC of the next queued message


@dataclass(frozen=True)
class Route:
    """Which of a project's numbers its feedback goes through now, and why not the ones before it."""

    project: str
    accounts: list[str]
    through: str  # '' when none can send (the feedback waits in the outbox of the one sending last)
    cause: str


def _seconds_since(iso: object) -> float:
    try:
        return max(0.0, (clock.now() - datetime.fromisoformat(str(iso))).total_seconds())
    except ValueError:
        return 0.0


def account_sending(name: str, phone: str, connection: dict | None) -> AccountSending:
    """What a bridge's `connection` (None: no health answer yet) says about sending."""
    if connection is None:
        return AccountSending(name, phone, UNKNOWN, "no health answer from its bridge (not running?)", None, None,
                              None, None)
    state, reason = str(connection.get("state") or "?"), str(connection.get("reason") or "")
    out = connection.get("sending") if isinstance(connection.get("sending"), dict) else {}
    queue = out.get("depth", connection.get("outbox_depth"))
    until: str | None = out.get("until")
    if state == CONNECTED and out.get("paused"):
        sending, why = PAUSED, f"rate-limited by WhatsApp: {out.get('reason') or '429'}"
    elif state == CONNECTED:
        sending, why = SENDING, ""
    elif state == "temporary_ban":
        sending, why = PAUSED, reason or "temporary ban by WhatsApp"
    elif state in ("logged_out", "stream_replaced"):
        sending, why, until = STOPPED, f"{state.replace('_', ' ')}: {reason}" if reason else state, None
    else:
        window = connection.get("open_window")
        since = f" since {str(window.get('started_at'))[11:19]} UTC" if isinstance(window, dict) else ""
        sending, why, until = PAUSED, f"{state}{since}" + (f": {reason}" if reason else ""), None
    return AccountSending(name, phone, sending, why, until, queue if isinstance(queue, int) else None,
                          out.get("drain_s"), out.get("next_send_at"))


def route(project: str, accounts: list[str], connections: dict[str, dict | None], failover_after_s: float) -> Route:
    """The first of `accounts` the failover rule lets send now (monitors/failover.py)."""
    causes = []
    for name in accounts:
        health = connections.get(name)
        if health is None:
            cause = f"{name}: no health answer from its bridge"
        else:
            window = health.get("open_window")  # disconnected since (a bridge opens one at every disconnect)
            away = _seconds_since(window.get("started_at")) if isinstance(window, dict) else 0.0
            cause = why_not(name, health, away, failover_after_s)
        if not cause:
            return Route(project, accounts, name, "; ".join(causes))
        causes.append(cause)
    return Route(project, accounts, "", "; ".join(causes))


@dataclass(frozen=True)
class Sending:
    accounts: list[AccountSending]
    routes: list[Route]


def read(config: Config, components: list[dict]) -> Sending:
    """Every account and every enabled project, from the watchdog's status items."""
    items = {str(item.get("name")): item for item in components}
    connections = {name: (items.get(account_component(name)) or {}).get("connection") for name in config.accounts}
    accounts = [account_sending(name, account.phone, connections[name]) for name, account in config.accounts.items()]
    routes = [route(p.name, p.send_accounts or [p.send_account], connections, p.feedback.failover_after_s)
              for p in config.projects if p.enabled]
    return Sending(accounts, routes)


def _when(iso: str | None) -> str:
    """`14:03:09 UTC` today, `2026-12-08 14:03:09 UTC` on another day (a ban may last days)."""
    if not iso:
        return "-"
    return f"{iso[11:19]} UTC" if iso[:10] == clock.now().date().isoformat() else f"{iso[:10]} {iso[11:19]} UTC"


def account_row(a: AccountSending) -> tuple[str, ...]:
    until = _when(a.until) if a.until else ("when paired again" if a.sending == STOPPED else
                                            "when it reconnects" if a.sending == PAUSED else "-")
    return (a.account, a.phone, a.sending, a.why or "-", until, "-" if a.queue is None else str(a.queue),
            format_duration(a.drain_s) if a.queue else "-", _when(a.next_send_at) if a.queue else "-")


def route_row(r: Route) -> tuple[str, ...]:
    return r.project, ", ".join(r.accounts), r.through or "none can send", r.cause or "-"


ACCOUNT_HEADER = ("ACCOUNT", "NUMBER", "SENDING", "WHY", "UNTIL", "QUEUE", "DRAINED IN", "NEXT SEND")
ROUTE_HEADER = ("PROJECT", "SENDS THROUGH", "FEEDBACK NOW THROUGH", "WHY NOT THE FIRST")


def sections(config: Config, components: list[dict]) -> list[StatusSection]:
    """`wa-watchdog status`'s sending section. Its `--json` data only where a project has a second number: with one
    number per project the components' items (`connection`) already carry every fact (and `--json` stays a list)."""
    view = read(config, components)
    lines = ["sending (per account, from the bridges' last health answers)",
             *table_lines(ACCOUNT_HEADER, [account_row(a) for a in view.accounts])]
    failover = [r for r in view.routes if len(r.accounts) > 1]
    if failover:
        lines += ["", *table_lines(ROUTE_HEADER, [route_row(r) for r in failover])]
    data = {"accounts": [asdict(a) for a in view.accounts], "projects": [asdict(r) for r in view.routes]}
    return [StatusSection("sending", lines, data if failover else None)]


CLASS = {SENDING: "ok", PAUSED: "warn", STOPPED: "bad", UNKNOWN: "quiet"}


def panel(view: Sending) -> str:
    """The console's sending panel: the same two tables, each row marked with what it is about."""
    def cells(row: tuple[str, ...]) -> str:
        return "".join(f"<td>{escape(cell)}</td>" for cell in row)

    head = "".join(f"<th>{escape(h.lower())}</th>" for h in ACCOUNT_HEADER)
    rows = "".join(f'<tr class="account {CLASS[a.sending]}" data-account="{escape(a.account)}" '
                   f'data-sending="{escape(a.sending)}">{cells(account_row(a))}</tr>' for a in view.accounts)
    out = [f'<table class="sending-accounts"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>']
    head = "".join(f"<th>{escape(h.lower())}</th>" for h in ROUTE_HEADER)
    rows = "".join(f'<tr class="route{"" if r.through == r.accounts[0] else " warn"}" '
                   f'data-project="{escape(r.project)}" data-through="{escape(r.through)}">{cells(route_row(r))}</tr>'
                   for r in view.routes)
    out.append(f'<table class="sending-routes"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>')
    return "".join(out)


class SendingView(Extension):
    """The console's Sending panel (named in the monitors' slice, `console_views`)."""

    name = "sending"
    title = "Sending"
    events = NONE  # failover and failback are the monitors' events (DropsView's slice registers them)

    def __init__(self, config: Config) -> None:
        self.config = config

    def panel(self, status: list[dict]) -> str:
        return panel(read(self.config, status))
