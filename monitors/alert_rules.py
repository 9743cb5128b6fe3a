"""The drops domain's alert rules (watchdog/shared/alert_rules.py).

Imported by the config loader (every process): keep it free of the monitors' own imports.
"""
from __future__ import annotations

from watchdog.shared.alert_rules import register

WEBHOOK_DEAD = register(
    "webhook_dead", "event webhook given up on (dead)",
    "check that the receiver answers 2xx (`wa-watchdog logs drops-api` says why each attempt failed); "
    "the web app can fetch what it missed from `GET /api/drops`")
