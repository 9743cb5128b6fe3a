"""Ops commands on drops.db: `wa-watchdog drops` (list) and `wa-watchdog feedback` (operator feedback, and the
operator's decision on feedback of unknown fate: `--mark-sent` or `--resend`).

Both answer an unknown project or drop with a clear message and exit code 1
(the issue's contract), not the configuration exit code 2: the config is
fine, the request is wrong.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from datetime import timedelta

import aiohttp
from loguru import logger

from bridge.schema import bare_user, format_ts, parse_ts
from monitors.api.service import drop_json
from monitors.bridge_client import BridgeUnavailable
from monitors.drops_store import (FEEDBACK_ACCEPTED, FEEDBACK_FAILED, FEEDBACK_PENDING, FEEDBACK_SENT,
                                  FEEDBACK_UNKNOWN, Drop, DropsDB, StoreUnavailable, drops_db_path, open_drops_store)
from monitors.failover import Senders
from monitors.feedback import deliver, operator_feedback
from monitors.config import ProjectConfig
from watchdog.components import Config
from watchdog.shared.config import ConfigError
from watchdog.shared.exitcodes import EXIT_CONFIG, EXIT_ERROR, EXIT_OK
from watchdog.shared.migrations import SchemaTooNew
from watchdog.shared.human import parse_since
from watchdog.shared import clock

CLI_ATTEMPTS = 4  # quick retries (~0.4 s) before telling the operator the bridge is not answering


def _fail(command: str, message: str) -> int:
    print(f"wa-watchdog {command}: {message}", file=sys.stderr)
    return EXIT_ERROR


def _short_time(text: str | None) -> str:
    return f"{parse_ts(text).astimezone():%Y-%m-%d %H:%M:%S}" if text else "-"


def format_table(rows: list[Drop], resubmissions: dict[int, int]) -> str:
    headers = ("ID", "PROJECT", "DROP", "GROUP", "SUBMITTED BY", "POSTED", "DETECTED", "BACKFILLED", "FEEDBACK",
               "FEEDBACK SENT", "RESUBMITTED")
    lines = [(d.public_id, d.project, d.drop_number, d.group_name or d.group_jid, bare_user(d.submitted_by),
              _short_time(d.message_time), _short_time(d.detected_at), "yes" if d.backfilled else "no",
              d.feedback_status, _short_time(d.feedback_sent_at), str(resubmissions[d.id]))
             for d in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                     for line in [headers, *lines])


def _with_store(config: Config, command: str, use: Callable[[DropsDB], int], readonly: bool = False) -> int:
    """Open the configured drops store for one command; an unreachable or too new store is a clear message."""
    try:
        drops = open_drops_store(config, readonly=readonly)
        try:
            return use(drops)
        finally:
            drops.close()
    except StoreUnavailable as exc:
        return _fail(command, f"the drops store is unavailable, nothing done: {exc}")
    except SchemaTooNew as exc:
        print(f"wa-watchdog {command}: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def cmd_drops(config: Config, args: argparse.Namespace) -> int:
    if args.project is not None:
        try:
            config.project(args.project)
        except ConfigError as exc:
            return _fail("drops", str(exc))
    since = ""
    if args.since:
        try:
            since = format_ts(clock.now() - timedelta(seconds=parse_since(args.since)))
        except ValueError as exc:
            return _fail("drops", str(exc))

    def show(drops: DropsDB) -> int:
        rows = drops.drops(args.project, since, args.backfilled)
        resubmissions = {d.id: drops.resubmissions(d) for d in rows}
        print_drops(rows, resubmissions, bool(args.project or since or args.backfilled), args.json)
        return EXIT_OK
    path = drops_db_path(config.data_dir)
    if not config.database.url and not config.data_dir.is_dir():
        print(f"wa-watchdog drops: data directory {config.data_dir} does not exist (check --data-dir or data_dir "
              f"in {config.path})", file=sys.stderr)
        return EXIT_CONFIG
    if not config.database.url and not path.exists():  # the monitors create it on their first start
        print(f"wa-watchdog drops: no drops store in {config.data_dir} (no {path.name}: is this the data directory "
              f"`wa-watchdog run` uses?)", file=sys.stderr)
        return EXIT_CONFIG
    return _with_store(config, "drops", show, readonly=True)


def print_drops(rows: list[Drop], resubmissions: dict[int, int], filtered: bool, as_json: bool) -> None:
    if as_json:
        # the drops API's shape (`id` is what GET /api/drops/{id} takes), plus what only this command counts
        print(json.dumps([{**drop_json(d), "resubmissions": resubmissions[d.id]} for d in rows], indent=2))
    elif rows:
        print(format_table(rows, resubmissions))
    else:
        print("no drops recorded" + (" matching the filters" if filtered else ""))


async def _send(config: Config, project: ProjectConfig, drops: DropsDB, drop: Drop, message: str) -> int:
    feedback = drops.add_feedback(drop, operator_feedback(drop.project, drop.drop_number, drop.group_jid,
                                                          drop.submitted_by, drops.latest_message_id(drop), message))
    if feedback.status in FEEDBACK_ACCEPTED:
        print(f"already {feedback.status} at {_short_time(feedback.sent_at)}: {feedback.text}")
        return EXIT_OK
    if feedback.status == FEEDBACK_FAILED:
        return _fail("feedback", f"the bridge refused this feedback earlier: {feedback.error}")
    if config.cluster is not None:  # only the host holding the sender lease sends (issue 21)
        lease = config.lease_account(project)
        print(f"pending: {feedback.text} (the host holding the sender lease of {lease} sends it)")
        return EXIT_OK
    async with aiohttp.ClientSession() as http:
        try:
            done = await deliver(Senders(config, project, http), drops, feedback, attempts=CLI_ATTEMPTS,
                                 max_wait=0.2)  # through the first of send_accounts that can send
        except BridgeUnavailable as exc:
            return _fail("feedback", f"not sent, the bridge is not answering ({exc}); it stays pending and "
                                     f"monitor:{drop.project} sends it when the bridge is back")
    if done.status == FEEDBACK_FAILED:
        return _fail("feedback", f"the bridge refused it: {done.error}")
    print(f"{done.status}: {done.text}")
    return EXIT_OK


def cmd_feedback(config: Config, args: argparse.Namespace) -> int:
    logger.remove()  # the command prints the outcome itself; retry warnings are for the monitor's log
    try:
        project = config.project(args.project)
    except ConfigError as exc:
        return _fail("feedback", str(exc))
    message = (args.message or "").strip()
    if args.message is not None and not message:
        return _fail("feedback", "--message is empty")
    drop_number = args.drop.strip().upper()
    if not config.database.url and not drops_db_path(config.data_dir).exists():
        return _unknown_drop(project.name, drop_number)

    def send(drops: DropsDB) -> int:
        drop = drops.drop(project.name, drop_number)
        if drop is None:
            return _unknown_drop(project.name, drop_number)
        if not message:
            return _decide(drops, drop, FEEDBACK_SENT if args.mark_sent else FEEDBACK_PENDING)
        return asyncio.run(_send(config, project, drops, drop, message))
    return _with_store(config, "feedback", send)


def _decide(drops: DropsDB, drop: Drop, status: str) -> int:
    """The operator's decision on the drop's feedback of unknown fate (monitors/fate.py): it went, or send it."""
    unknown = [f for f in drops.feedback_of(drop) if f.status == FEEDBACK_UNKNOWN]
    if not unknown:
        return _fail("feedback", f"{drop.drop_number} has no feedback of unknown fate (its feedback is "
                                 f"{drop.feedback_status}); nothing changed")
    for feedback in unknown:
        done = drops.decide_unknown(feedback.id, status)
        if done.status == FEEDBACK_SENT:
            print(f"marked sent: {done.text}")
        else:
            print(f"pending: {done.text} (the host holding the sender lease sends it)")
    return EXIT_OK


def _unknown_drop(project: str, drop_number: str) -> int:
    return _fail("feedback", f"no drop {drop_number} recorded for project {project}; nothing sent "
                             f"(see: wa-watchdog drops --project {project})")
