"""What the supervisor itself adds (watchdog/shared/component.py): its commands, run and the operator's queries.

The recovery log and the config are backed up by `wa-watchdog backup` itself; the slices add their stores.
"""
from __future__ import annotations

import argparse

from watchdog.shared.component import Command, Component, json_option, since_option


def _restart(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("component", help="component name, e.g. bridge:main or monitor:lawley")


def _recoveries(parser: argparse.ArgumentParser) -> None:
    json_option(parser)
    since_option(parser)
    parser.add_argument("--component", help="only this component (e.g. bridge:main)")


def _logs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("component", nargs="*", help="only these components (default: all and the watchdog)")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new lines as they come")
    parser.add_argument("--lines", "-n", type=int, help="the newest N lines (default 50, 10 with -f)")
    since_option(parser)


def _check(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--unit-dir", default="/etc/systemd/system", help="where the systemd unit is installed")


def _backup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="directory to write the backup into (a new dated folder inside it)")


COMPONENT = Component("watchdog", commands=(
    Command("run", "supervise the whole system (what systemd starts)", "watchdog.commands.run:cmd_run",
            writes_data_dir=True),
    Command("status", "show every component of the running watchdog", "watchdog.commands.status:cmd_status",
            json_option, sees_running=True),
    Command("restart", "restart one component", "watchdog.control.client:cmd_restart", _restart),
    Command("reload", "make the running watchdog read its config again", "watchdog.control.client:cmd_reload"),
    Command("recoveries", "show the recovery log", "watchdog.commands.recoveries:cmd_recoveries", _recoveries,
            sees_running=True),
    Command("logs", "show the components' logs merged in time order, or follow them",
            "watchdog.commands.logs:cmd_logs", _logs, sees_running=True),
    Command("check", "verify an installation: config, data dir, ports, sessions, unit",
            "watchdog.commands.check:cmd_check", _check),
    Command("backup", "copy the stores, session and recovery log consistently into DIR",
            "watchdog.commands.backup:cmd_backup", _backup),
))
