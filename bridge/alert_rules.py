"""The bridge's alert rules: what only a WhatsApp session comes to (watchdog/shared/alert_rules.py), and the
one wording of its not_in_group condition.

Imported by the config loader (every process): keep it free of the bridge's own imports.
"""
from __future__ import annotations

from watchdog.shared.alert_rules import register

PAIR = "`wa-watchdog pair --account NAME --phone NUMBER`, then `wa-watchdog restart bridge:NAME`"

DISCONNECT = register(
    "disconnect", "WhatsApp disconnected",
    "check the host's internet and WhatsApp's status; if it lasts, check that the phone is online and "
    "the linked device still listed. The outage's messages are backfilled on reconnect", lasting=True)
STREAM_REPLACED = register(
    "stream_replaced", "session taken over elsewhere (stream replaced)",
    "find and close the other client of this number (WhatsApp Web, a second bridge on another "
    "host); never run one account on two hosts")
LOGGED_OUT = register("logged_out", "logged out: re-pairing needed", f"re-pair as the service user: {PAIR}")
NOT_PAIRED = register("not_paired", "never paired: pairing needed", f"pair as the service user: {PAIR}")
NOT_IN_GROUP = register(
    "not_in_group", "following a group the account is not in: nothing from it is recorded",
    "a mistyped JID: correct the project's `groups`, then `wa-watchdog reload`; otherwise add the "
    "number to the group on a phone (resolved at the bridge's next look, or at once with "
    "`wa-watchdog restart bridge:NAME`)")
TEMPORARY_BAN = register(
    "temporary_ban", "temporarily banned by WhatsApp: nothing is sent until it expires",
    "nothing shortens it: the alert names WhatsApp's reason code and the expiry; the bridge connects and sends "
    "again by itself then. Meanwhile lower the pace (fewer, slower messages), and use a second number for "
    "feedback if one is set up")


def not_in_text(account: str, group: str, projects: list[str]) -> str:
    """`account main is not in group 120363…@g.us (project velo-test)`: the one wording every surface uses."""
    whose = f" (project{'s' if len(projects) > 1 else ''} {', '.join(projects)})" if projects else ""
    return f"account {account} is not in group {group}{whose}"
