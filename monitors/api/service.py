"""What the drops API does, as plain functions over the drops store: the handlers only parse and answer.

Errors are exceptions that name the problem: `BadRequest` (400), `NotFound`
(404), `Conflict` (409). Times go out as RFC 3339 (`2026-11-24T22:31:27.123456+00:00`,
monitors.store.shapes), what `new Date()` parses, and come in as ISO 8601 with a timezone.

Feedback from the web app goes the way `wa-watchdog feedback` sends it: recorded
pending in the store, posted to the sending account's bridge with an
Idempotency-Key (`monitors.feedback.deliver`), left pending for the project's
monitor to send when the bridge does not answer now. A caller's own
`Idempotency-Key` header names the feedback: a retry with the same key
returns the first result, a different request under the same key is a 409.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime

import aiohttp

from bridge.schema import format_ts
from monitors.bridge_client import BridgeUnavailable
from monitors.drops_store import FEEDBACK_ACCEPTED, FEEDBACK_FAILED, FEEDBACK_PENDING, FEEDBACK_STATUSES, Drop, DropsDB
from monitors.failover import Senders
from monitors.feedback import deliver, operator_feedback
from monitors.store.shapes import drop_json, feedback_json, submission_json
from watchdog.components import Config
from watchdog.shared.config import ConfigError
from watchdog.shared.web_guard import unknown_field

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_MESSAGE = 4096  # WhatsApp allows more; feedback is a sentence or two
MAX_KEY = 200  # Idempotency-Key, as the bridge bounds it
MAX_NUMBER = 64  # a drop number: what any [[projects]] pattern matches is far shorter
LIST_PARAMETERS = ("project", "drop_number", "since", "until", "backfilled", "feedback", "limit", "cursor")
SEND_ATTEMPTS = 4  # quick tries (~0.4 s) before answering 202 and leaving it to the monitor


class BadRequest(ValueError):
    """400: the request is wrong; the message names the field."""


class NotFound(LookupError):
    """404: no such drop."""


class Conflict(Exception):
    """409: the Idempotency-Key was used for a different request, or the drop's project is gone from the config."""


# -- reading -----------------------------------------------------------------------------------------

def _time(query: Mapping[str, str], name: str) -> str | None:
    text = query.get(name)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace(" ", "+") if text.count(" ") == 1 else text)
    except ValueError:
        raise BadRequest(f"{name}: not an ISO 8601 time: {text[:60]!r}") from None
    if moment.tzinfo is None:
        raise BadRequest(f"{name}: needs a timezone (e.g. 2026-11-24T22:31:27Z): {text[:60]!r}")
    try:
        return format_ts(moment)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise BadRequest(f"{name}: out of range: {text[:60]!r}") from None


def _choice(query: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str | None:
    value = query.get(name)
    if value is None:
        return None
    if value not in allowed:
        raise BadRequest(f"{name}: must be one of {', '.join(allowed)}, got {value[:60]!r}")
    return value


def list_drops(db: DropsDB, config: Config, query: Mapping[str, str]) -> dict:
    """GET /api/drops: a page of drops newest first, whether there are more, and the cursor of the next page
    (null on the last). `drop_number` finds a drop by its number (one per project that recorded it)."""
    unknown = sorted(set(query) - set(LIST_PARAMETERS))
    if unknown:
        raise BadRequest(f"{unknown[0]}: unknown query parameter (known: {', '.join(LIST_PARAMETERS)})")
    empty = [name for name, value in query.items() if value == ""]
    if empty:
        raise BadRequest(f"{empty[0]}: empty (leave the parameter out for no filter)")
    project = query.get("project")
    if project is not None:
        _configured(config, project)
    backfilled = _choice(query, "backfilled", ("true", "false"))
    limit_text = query.get("limit", str(DEFAULT_LIMIT))
    # ASCII digits, few of them: '²'.isdigit() is True yet int('²') a ValueError, so is int() of 5,000 digits (500s)
    if not re.fullmatch(r"[0-9]{1,6}", limit_text) or not 1 <= int(limit_text) <= MAX_LIMIT:
        raise BadRequest(f"limit: expected a whole number 1-{MAX_LIMIT}, got {limit_text[:20]!r}")
    number = query.get("drop_number")
    number = None if number is None else drop_number(number)
    since, until = _time(query, "since"), _time(query, "until")
    feedback = _choice(query, "feedback", FEEDBACK_STATUSES)
    try:  # the filters are checked above: a ValueError here is the cursor's alone (BadRequest is one too)
        page = db.list_drops(project=project, drop_number=number, since=since, until=until,
                             backfilled=None if backfilled is None else backfilled == "true",
                             feedback=feedback, limit=int(limit_text), cursor=query.get("cursor"))
    except ValueError as exc:  # a cursor this API did not hand out: no such page
        raise NotFound(str(exc)) from None
    return {"drops": [drop_json(d) for d in page.drops], "has_more": page.next_cursor is not None,
            "next_cursor": page.next_cursor}


def drop_detail(db: DropsDB, public_id: str) -> dict:
    """GET /api/drops/{id}: the drop, every submission (first and resubmissions), every feedback message."""
    detail = db.drop_by_public_id(public_id)
    if detail is None:
        raise NotFound(f"no drop with id {public_id[:60]!r}")
    return {**drop_json(detail.drop),
            "submissions": [submission_json(e) for e in detail.submissions],
            "feedback": [feedback_json(f) for f in detail.feedback]}


# -- feedback ----------------------------------------------------------------------------------------

def _text(body: object, name: str) -> str:
    value = body.get(name) if isinstance(body, dict) else None
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{name}: missing (a non-empty string)")
    if len(value) > MAX_MESSAGE:
        raise BadRequest(f"{name}: longer than {MAX_MESSAGE} characters ({len(value)})")
    return value.strip()


def drop_number(text: str) -> str:
    """A drop number as the store keeps it (upper case); one no monitor could have recorded is a 400, not a query
    (as the document says: not blank, at most 64 characters, no NUL, which PostgreSQL refuses in text: a 500)."""
    number = text.strip().upper()
    if not number or len(number) > MAX_NUMBER or "\x00" in number:
        raise BadRequest(f"drop_number: expected a drop number like DR1734150, got {text[:40]!r}")
    return number


def _fields(body: object, names: tuple[str, ...]) -> dict:
    """The body as a JSON object with no field but `names` (the document says `additionalProperties: false`)."""
    if not isinstance(body, dict):
        raise BadRequest(f"body: expected a JSON object with {', '.join(names)}")
    if problem := unknown_field(body, names):
        raise BadRequest(problem)
    return body


def _configured(config: Config, project: str) -> None:
    """NotFound unless `project` is configured: a well-formed name of nothing we hold (no drops, no bridge)."""
    try:
        config.project(project)
    except ConfigError:
        raise NotFound(f"project: no project named {project[:60]!r} (known: "
                       f"{', '.join(p.name for p in config.projects)})") from None


def message_of(body: object) -> str:
    return _text(_fields(body, ("message",)), "message")


def drop_by_number(db: DropsDB, config: Config, body: object) -> tuple[Drop, str]:
    """POST /api/feedback {"project", "drop_number", "message"}: the drop and the message."""
    body = _fields(body, ("project", "drop_number", "message"))
    project, number, message = _text(body, "project"), drop_number(_text(body, "drop_number")), _text(body, "message")
    _configured(config, project)
    drop = db.drop(project, number)
    if drop is None:
        raise NotFound(f"no drop {number[:40]} recorded for project {project}")
    return drop, message


def drop_by_id(db: DropsDB, public_id: str) -> Drop:
    detail = db.drop_by_public_id(public_id)
    if detail is None:
        raise NotFound(f"no drop with id {public_id[:60]!r}")
    return detail.drop


def _caller_key(key: str) -> str:
    """The store's idempotency key for a caller's Idempotency-Key: one namespace, apart from the monitors' keys."""
    return hashlib.sha256(f"drops-api\n{key}".encode("utf-8")).hexdigest()


async def send_feedback(db: DropsDB, config: Config, http: aiohttp.ClientSession, drop: Drop, message: str,
                        idempotency_key: str | None) -> tuple[int, dict]:
    """Record and send operator feedback for `drop`; (HTTP status, body).

    200 sent or queued by the bridge, 202 pending (the bridge is not answering; the
    project's monitor sends it), 502 refused by the bridge or WhatsApp. In a cluster it is only recorded
    (202): the monitor of the host holding the account's sender lease sends it, fenced.
    """
    try:
        project = config.project(drop.project)
    except ConfigError:
        raise Conflict(f"project {drop.project} is no longer configured: no bridge to send through") from None
    new = operator_feedback(drop.project, drop.drop_number, drop.group_jid, drop.submitted_by,
                            db.latest_message_id(drop), message)
    if idempotency_key is not None:
        if not idempotency_key or len(idempotency_key) > MAX_KEY:
            raise BadRequest(f"Idempotency-Key: expected 1-{MAX_KEY} characters")
        new = replace(new, idempotency_key=_caller_key(idempotency_key))
    feedback = db.add_feedback(drop, new)
    if idempotency_key is not None and (feedback.project, feedback.drop_number, feedback.text) != (
            drop.project, drop.drop_number, new.text):
        raise Conflict(f"Idempotency-Key {idempotency_key[:60]!r} was used for another request "
                       f"(feedback {feedback.id} on {feedback.project} {feedback.drop_number})")
    if feedback.status == FEEDBACK_PENDING and config.cluster is None:
        try:
            feedback = await deliver(Senders(config, project, http), db, feedback,
                                     attempts=SEND_ATTEMPTS, max_wait=0.2)
        except BridgeUnavailable:
            feedback = db.feedback(feedback.id)
    status = 200 if feedback.status in FEEDBACK_ACCEPTED else 502 if feedback.status == FEEDBACK_FAILED else 202
    return status, {"drop": drop_json(db.drop(drop.project, drop.drop_number) or drop),
                    "feedback": feedback_json(feedback)}
