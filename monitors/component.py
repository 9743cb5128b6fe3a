"""What `monitors` adds to the supervisor (watchdog/shared/component.py): the drop monitors and the drops-api,
the operator's drops commands, the drops store's backup item, the cluster's section of `status` and the
console's drops view."""
from __future__ import annotations

import argparse

from monitors.config_checks import SLICE
from watchdog.shared.component import Command, Component, json_option, since_option
from watchdog.shared.recovery_log import register_events


def _monitor(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project", required=True, action="append",
                        help="project name from [[projects]] (repeat it: one process for several projects)")


def _drops(parser: argparse.ArgumentParser) -> None:
    json_option(parser)
    since_option(parser)
    parser.add_argument("--project", help="only this project")
    parser.add_argument("--backfilled", action="store_true", help="only drops recovered after an outage")


def _feedback(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project", required=True)
    parser.add_argument("drop", help="drop number, e.g. DR1234567")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--message", help="feedback text, e.g. 'needs correction'")
    what.add_argument("--mark-sent", action="store_true",
                      help="feedback of unknown fate (a cluster): it is in the group, mark it sent")
    what.add_argument("--resend", action="store_true",
                      help="feedback of unknown fate (a cluster): it is not in the group, send it")


def _prune(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--older-than", required=True, help="age of what goes, e.g. 180d")
    parser.add_argument("--dry-run", action="store_true", help="count what would go, remove nothing")


COMPONENT = Component(
    "monitors",
    config=SLICE,
    commands=(
        Command("monitor", "run the drop monitor of one or more projects", "monitors.main:cmd_monitor", _monitor,
                writes_data_dir=True, fork=""),
        Command("drops", "list recorded drops", "monitors.ops:cmd_drops", _drops),
        Command("feedback", "send operator feedback for a recorded drop, or decide feedback of unknown fate", "monitors.ops:cmd_feedback", _feedback),
        Command("prune", "remove old messages every monitor has read from messages.db", "monitors.prune:cmd_prune",
                _prune),
        Command("drops-api", "run the drops and feedback API and the event webhooks", "monitors.api.main:cmd_drops_api",
                writes_data_dir=True, fork=""),
    ),
    programs="monitors.programs:programs",
    backup_items="monitors.backup:items",
    status_sections="monitors.status:sections",
    console_views=("monitors.sending_panel:SendingView", "monitors.console_view:DropsView"),
    recovery_folds=("monitors.recovery_lines:fold_quiet_backfills",),
    preload=("monitors.main", "monitors.api.main"),
)

register_events("backfill",  # what a project recovered of a window
                "reread",  # a cursor not in the file it follows (a restore): read again from a safe point
                "lease", "node_silent",  # a cluster's sender lease acquired or lost; another host not seen
                "failover", "failback",  # a project's feedback moved to its next sending number; back to the first
                "feedback_taken_back",  # on a failover: queued feedback withdrawn from the old number's outbox
                "feedback_fate")  # a send another host may have made: found, sent, or unknown (monitors/fate.py)
