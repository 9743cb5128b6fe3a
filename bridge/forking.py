"""Whether a bridge's command line may be forked from the pre-loaded template (watchdog/core/template.py asks).

Only a bridge whose transport the template has loaded (`TransportKind.forkable`: sim; neonize starts a Go
runtime and is never loaded there), and never its warm standby: forked, its takeover (the moment it must
be fastest) paid ~1,200 copy-on-write faults between the session lock and `connected` (docs/BENCHMARKS.md,
Recovery); exec'd, the pages it touches are its own before it waits.
"""
from __future__ import annotations

import argparse

from bridge.transports import kind
from watchdog.shared.config import ConfigError

STANDBY_REASON = "a warm standby: its takeover must not pay copy-on-write faults"


def exec_reason(args: argparse.Namespace) -> str:
    """Why this `wa-watchdog bridge` must be exec'd; "" if it can be forked."""
    if args.standby:
        return STANDBY_REASON
    from watchdog.components import load  # pre-loaded in the template with the composition
    try:
        transport = load(args.config, args.data_dir).account(args.account).transport
    except ConfigError:
        return "its configuration does not load (the bridge reports why)"
    if not kind(transport).forkable:
        return f"transport {transport} is never loaded into the template"
    return ""
