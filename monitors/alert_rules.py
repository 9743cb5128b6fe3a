"""The drops domain's alert rules (watchdog/shared/alert_rules.py).

Imported by the config loader (every process): keep it free of the monitors' own imports.
"""
from __future__ import annotations

from watchdog.shared.alert_rules import register

WEBHOOK_DEAD = register(
    "webhook_dead", "event webhook given up on (dead)",
    "check that the receiver answers 2xx (`wa-watchdog logs drops-api` says why each attempt failed); "
    "the web app can fetch what it missed from `GET /api/drops`")

LEASE_TAKEN_OVER = register(
    "lease_taken_over", "a cluster host took over sending from another",
    "the other host stopped renewing its sender lease without handing it over: it died, froze, or lost "
    "PostgreSQL; `wa-watchdog recoveries` shows the gap in sending; bring that host back (docs/OPERATIONS.md, "
    "\"Two hosts watching one number\")")

NODE_SILENT = register(
    "node_silent", "a cluster host has not been seen for [cluster] node_silent_s",
    "that host's processes stopped renewing its row in PostgreSQL: it died, froze, was stopped, or lost "
    "PostgreSQL; the other hosts go on recording and sending; `wa-watchdog status` shows when it was last seen; "
    "bring it back (docs/OPERATIONS.md, \"Two hosts watching one number\")")
FEEDBACK_FAILOVER = register(
    "feedback_failover", "a project's feedback goes through its next sending number",
    "the first of the project's send_accounts cannot send (temporarily banned, logged out, or disconnected "
    "longer than feedback.failover_after_s; the summary says which): feedback goes on through the next number, "
    "and returns by itself (resolved) once the first can send again. A ban: wait for its expiry and send less "
    "(docs/OPERATIONS.md, \"A second number\"); logged out: re-pair it (`wa-watchdog pair`)")

FEEDBACK_UNKNOWN = register(
    "feedback_unknown", "a cluster host could not find out whether a feedback message went out",
    "another host handed it to its bridge and stopped before marking it sent, and this host's bridge was not "
    "connected long enough to see that host's copy: look in the group, then `wa-watchdog feedback --project P DROP "
    "--mark-sent` (it is there) or `--resend` (it is not) (docs/OPERATIONS.md, \"Feedback of unknown fate\")")
