"""What `bridge` adds to the supervisor (watchdog/shared/component.py): the simulator and one bridge per account,
their commands, their `check` findings and backup items, and what the fork template loads ahead for them."""
from __future__ import annotations

import argparse

from bridge.config_checks import SLICE
from watchdog.shared.component import Command, Component
from watchdog.shared.recovery_log import register_events


def _account(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--account", required=True, help="account name from [accounts.NAME]")


def _bridge(parser: argparse.ArgumentParser) -> None:
    _account(parser)
    parser.add_argument("--standby", action="store_true",
                        help="warm standby: load everything, then wait for the session and take it over")


def _pair(parser: argparse.ArgumentParser) -> None:
    _account(parser)
    parser.add_argument("--phone", help="phone number for a pairing code (else a QR code)")


COMPONENT = Component(
    "bridge",
    config=SLICE,
    commands=(
        Command("sim", "run the simulated WhatsApp service", "bridge.simulator.server:cmd_sim", writes_data_dir=True,
                fork=""),
        Command("bridge", "run the bridge of one account", "bridge.main:cmd_bridge", _bridge, writes_data_dir=True,
                fork="bridge.forking:exec_reason"),
        Command("pair", "link an account to a phone (neonize)", "bridge.pairing:cmd_pair", _pair,
                writes_data_dir=True),
    ),
    programs="bridge.programs:programs",
    findings="bridge.check:findings",
    backup_items="bridge.backup:items",
    console_views=("bridge.console_view:ConnectionView",),
    preload=("bridge.main", "bridge.simulator.server", "bridge.transports.sim"),
)

register_events("disconnect", "reconnect",  # a WhatsApp connection window opened and closed (bridge/windows.py)
                "backfill",  # what a window's history request brought back
                "dead_letter", "quarantine")  # a send moved aside for good; poison messages set aside
