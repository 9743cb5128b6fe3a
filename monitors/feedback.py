"""Feedback to the group through the sending account's bridge: `POST /api/send` with a mention.

Every feedback message is first recorded in drops.db (pending) and carries an
`Idempotency-Key` derived from project, drop, the submission's message and
the text. So a monitor killed after the bridge accepted a send, a timeout
whose answer never arrived, or an operator re-running the command all post
the same key again, and the bridge answers with the first result instead of
sending twice.

An acknowledgement goes as the project's `feedback.ack` says: "message"
(the template, mentioning the contractor), "reply" (the same, quoting the
contractor's message: WhatsApp shows which post it answers) or "reaction"
(✅ on the contractor's message through `POST /api/react`: no message is added
to the group, and WhatsApp notifies the contractor). Operator feedback (a
correction, an approval) always quotes the contractor's message, so it shows
which post it answers, and is posted with operator priority: the bridge's pace
sends it before automatic acknowledgements queued for other groups (its own
group's earlier messages still go first). Replies and reactions name the
drop's latest submission, looked up when the feedback goes out.

Coalescing: message acknowledgements ("message", "reply") of one group that fall
due within `feedback.coalesce_s` of the first go out as one message, one line
per submitter naming their drops, each submitter mentioned once. The rows are
marked as carried by one message (`carrier_id`) before it is posted, so a
restart rebuilds the same message under the same Idempotency-Key; the answer's
message id goes on every row, and its receipts stamp them all.
Acknowledgements falling due while their group's earlier message still waits in
the bridge's paced outbox join it: it is withdrawn and one message carries all
(monitors/store/rejoin.py); one the bridge is sending or sent stays.

Bridge answers: 200 sent, 202 queued (its durable outbox sends on reconnect),
400/403/404/413/422/500 refused (the same request can never succeed: failed),
409 withdrawn (a cluster: the bridge knows the send's lease token is no longer
valid, bridge/fence.py; nothing is marked, the lease's holder sends it). No answer,
no published URL or 503 means the bridge is down or restarting: the message
stays pending and is retried with exponential backoff (tenacity), in its own
task so detection never waits for it.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

import aiohttp
from loguru import logger
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, stop_never, wait_exponential

from bridge.schema import bare_user
from monitors.drops_store import (FEEDBACK_FAILED, FEEDBACK_PENDING, FEEDBACK_QUEUED, FEEDBACK_SENT, FEEDBACK_UNKNOWN,
                                  KIND_ACK, KIND_OPERATOR, DropsDB, Feedback, Fence, LeaseLost, NewFeedback,
                                  StoreUnavailable, Submission)
from watchdog.shared import endpoints
from monitors.config import ProjectConfig
from monitors.fate import RECHECK_S, SEND, WAIT, Connection, Fates
from monitors.store import rejoin
from monitors.store.handed import hand
from watchdog.components import Config
from watchdog.shared.alerts import AlertManager
from watchdog.shared.recovery_log import RecoveryLog
from watchdog.shared.waiting import wait_event

if TYPE_CHECKING:
    from monitors.failover import Senders

REQUEST_TIMEOUT = 10.0  # the bridge's own send timeout is 10 s; after that the send stays in its outbox
RECHECK_INTERVAL = 5.0  # look for pending feedback recorded by other processes
STORE_RETRY = 1.0  # the drops store is down (PostgreSQL): look again this soon
# The bridge refused this request (bad request; WhatsApp refused the send): resending it cannot help.
# Anything else is retried: a 401 waits for the token to be fixed, and a 404 may come from another
# server that took a dead bridge's port before the new bridge published its own.
FINAL_FAILURES = {400, 403, 404, 413, 422, 500}  # 403/404: not a member / unknown group; 422: refused or dead-lettered
ACK_REACTION = "✅"


class BridgeUnavailable(Exception):
    """No bridge answered (not started, restarting, overloaded): try again later."""


@dataclass(frozen=True)
class Answer:
    status: str  # FEEDBACK_SENT | FEEDBACK_QUEUED | FEEDBACK_FAILED
    message: str
    bridge_message_id: str | None


def idempotency_key(project: str, drop: str, message_id: str, text: str) -> str:
    return hashlib.sha256("\n".join((project, drop, message_id, text)).encode("utf-8")).hexdigest()


def ack_for(project: ProjectConfig, sub: Submission) -> NewFeedback:
    """The automatic acknowledgement of a new drop: the project's template, or the reaction (its text)."""
    text = ACK_REACTION if project.feedback.ack == "reaction" else project.feedback.template.format(
        number=bare_user(sub.submitted_by), drop=sub.drop_number, project=project.name,
        group=sub.group_name or sub.group_jid)
    return NewFeedback(KIND_ACK, sub.group_jid, text, (sub.submitted_by,),
                       idempotency_key(project.name, sub.drop_number, sub.message_id, text))


def coalesced(project: ProjectConfig, rows: Sequence[Feedback], group_name: str) -> Feedback:
    """The one message carrying `rows` (acknowledgements to one group), as a feedback row to post: the template
    once per submitter with their drops (`DR1, DR2`), each submitter mentioned once. Built from every row the
    message carries, in id order, so a repost is the same message under the same key; its id is that of the
    first row still pending (what `deliver` checks)."""
    drops: dict[str, list[str]] = {}
    for row in sorted(rows, key=lambda r: r.id):
        drops.setdefault(row.mentions[0] if row.mentions else "", []).append(row.drop_number)
    text = "\n".join(project.feedback.template.format(number=bare_user(by), drop=", ".join(numbers),
                                                      project=project.name, group=group_name or rows[0].recipient)
                     for by, numbers in drops.items())
    key = hashlib.sha256("\n".join(sorted(row.idempotency_key for row in rows)).encode("utf-8")).hexdigest()
    first = min((row for row in rows if row.status == FEEDBACK_PENDING), key=lambda r: r.id, default=rows[0])
    return replace(first, text=text, mentions=tuple(by for by in drops if by), idempotency_key=key)


def queued_messages(drops: DropsDB, project: ProjectConfig, rows: Sequence[Feedback]) -> dict[str, list[Feedback]]:
    """Queued rows as the messages they went to the bridge in: the Idempotency-Key posted -> the rows it carries (a
    single row under its own key, a coalesced message under its carrier's key). What a withdraw names."""
    messages: dict[str, list[Feedback]] = {}
    carriers: set[int] = set()
    for row in rows:
        if row.carrier_id is None:
            messages[row.idempotency_key] = [row]
        elif row.carrier_id not in carriers:
            carriers.add(row.carrier_id)
            carried = drops.carried(row.carrier_id)
            messages[coalesced(project, carried, "").idempotency_key] = carried
    return messages


def operator_feedback(project: str, drop_number: str, group_jid: str, submitted_by: str, message_id: str,
                      message: str) -> NewFeedback:
    """`@27710000001 DR1234567 - needs correction`, answering the drop's latest submission."""
    text = f"@{bare_user(submitted_by)} {drop_number} - {message}"
    return NewFeedback(KIND_OPERATOR, group_jid, text, (submitted_by,),
                       idempotency_key(project, drop_number, message_id, text))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, under another user
    return True


class BridgeClient:
    """POSTs feedback to the sending account's bridge, found through its published endpoint."""

    def __init__(self, config: Config, send_account: str, http: aiohttp.ClientSession) -> None:
        account = config.account(send_account)
        self.data_dir = config.data_dir
        self.component = account.component
        self.headers = {"Authorization": f"Bearer {account.api_token}"} if account.api_token else {}
        self.http = http

    def _base(self) -> str:
        record = endpoints.read(self.data_dir, self.component)
        if record is None or "api" not in record["endpoints"]:
            raise BridgeUnavailable(f"{self.component} has not published its API (not started?)")
        if not _alive(record["pid"]):  # killed: its port may belong to someone else by now
            raise BridgeUnavailable(f"{self.component} (pid {record['pid']}) is not running")
        return record["endpoints"]["api"]

    async def health(self) -> dict:
        """The bridge's `GET /api/health` answer (200 or 503, both say how it is); BridgeUnavailable if none."""
        base = self._base()
        try:
            async with self.http.get(f"{base}/api/health", headers=self.headers,
                                     timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as response:
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise BridgeUnavailable(f"{self.component} at {base}: {type(exc).__name__}: {exc}") from None
        if not isinstance(body, dict):
            raise BridgeUnavailable(f"{self.component} at {base}: health is not a JSON object")
        return body

    async def _post_json(self, path: str, body: dict, headers: dict[str, str] | None = None,
                         timeout: float = REQUEST_TIMEOUT) -> tuple[int, object]:
        """POST `body` to the bridge: its status and JSON answer; BridgeUnavailable if none."""
        base = self._base()
        try:
            async with self.http.post(f"{base}{path}", json=body, headers={**self.headers, **(headers or {})},
                                      timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                return response.status, await response.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise BridgeUnavailable(f"{self.component} at {base}: {type(exc).__name__}: {exc}") from None

    async def fence(self, fence: Fence, valid_until: float | None, timeout: float) -> dict:
        """Tell the bridge that `fence`'s token is valid until `valid_until` (CLOCK_MONOTONIC), or lost (None)."""
        body: dict = {"lease": fence.account, "token": fence.token}
        # valid while this process (the keeper) lives: dying, it voids it at once (bridge/fence.py)
        body.update({"valid_until": valid_until, "keeper": os.getpid()} if valid_until is not None else {"lost": True})
        status, reply = await self._post_json("/api/fence", body, timeout=timeout)
        if status != 200 or not isinstance(reply, dict):
            raise BridgeUnavailable(f"{self.component}: /api/fence answered HTTP {status}: {reply}")
        return reply

    async def withdraw(self, keys: Sequence[str]) -> dict[str, str]:
        """Take back queued sends by key: each key's state after (withdrawn, sending, sent, failed, unknown)."""
        status, reply = await self._post_json("/api/withdraw", {"idempotency_keys": list(keys)})
        if status != 200 or not isinstance(reply, dict) or not isinstance(reply.get("states"), dict):
            raise BridgeUnavailable(f"{self.component}: /api/withdraw answered HTTP {status}: {reply}")
        return {str(key): str(state) for key, state in reply["states"].items()}

    async def post(self, feedback: Feedback, ack: str = "message", target: str = "",
                   fence: Fence | None = None) -> Answer:
        """Send one feedback row: an acknowledgement as `ack` says, operator feedback as a reply; replies and
        reactions name the message `target` (the drop's latest submission, sent by the first mention). Under a
        cluster's sender lease (`fence`) the bridge sends it only while that token is valid (LeaseLost: it knows
        the token is over)."""
        path, body = "/api/send", {"recipient": feedback.recipient, "message": feedback.text,
                                   "mentions": list(feedback.mentions)}
        contractor = feedback.mentions[0] if feedback.mentions else ""
        if feedback.kind == KIND_ACK and ack == "reaction" and target:
            path, body = "/api/react", {"recipient": feedback.recipient, "message_id": target,
                                        "emoji": feedback.text, "from_me": False, "sender_jid": contractor}
        elif target and (feedback.kind == KIND_OPERATOR or ack == "reply"):
            body.update(quoted_message_id=target, quoted_sender_jid=contractor, quoted_content=feedback.drop_number)
        if feedback.kind == KIND_OPERATOR:  # the bridge's pace sends it before automatic acknowledgements
            body["priority"] = "operator"
        if fence is not None:
            body["fence"] = {"lease": fence.account, "token": fence.token}
        status, reply = await self._post_json(path, body, {"Idempotency-Key": feedback.idempotency_key})
        message = str(reply.get("message", "")) if isinstance(reply, dict) else ""
        bridge_id = reply.get("id") if isinstance(reply, dict) else None
        if status == 200:
            return Answer(FEEDBACK_SENT, message, bridge_id)
        if status == 202:
            return Answer(FEEDBACK_QUEUED, message, bridge_id)
        if status == 409 and isinstance(reply, dict) and reply.get("withdrawn") is True:
            raise LeaseLost(f"feedback {feedback.id}: {self.component} withdrew it: {message}")
        if status in FINAL_FAILURES:
            return Answer(FEEDBACK_FAILED, f"HTTP {status}: {message}", bridge_id)
        raise BridgeUnavailable(f"{self.component}: HTTP {status}: {message}")


class Poster(Protocol):
    """What posts a feedback row: one account's BridgeClient, or a project's Senders (monitors/failover.py)."""

    async def post(self, feedback: Feedback, ack: str = "message", target: str = "",
                   fence: Fence | None = None) -> Answer: ...

    async def withdraw(self, keys: Sequence[str]) -> dict[str, str]: ...


def answering(drops: DropsDB, feedback: Feedback) -> str:
    """The message an acknowledgement replies or reacts to: the drop's latest submission ('' if unknown)."""
    drop = drops.drop(feedback.project, feedback.drop_number)
    return drops.latest_message_id(drop) if drop is not None else ""


Held = Callable[[], Fence | None]  # a cluster's sender lease: the fence to send under now, or None


async def deliver(client: Poster, drops: DropsDB, feedback: Feedback, attempts: int | None = None,
                  max_wait: float = 2.0, ack: str = "message", held: Held | None = None,
                  members: Sequence[Feedback] = ()) -> Feedback:
    """Post until the bridge answers (at most `attempts` times, default forever); record each outcome.

    Raises BridgeUnavailable when the attempts ran out; the feedback then stays pending. In a cluster
    (`held`), every post needs the sender lease still held under the claim's token and every mark carries
    it: LeaseLost otherwise, and nothing more is posted or marked. `members`: the rows a coalesced message
    (`feedback`, from `coalesced`) carries; each is marked with the answer.
    """
    members = [m for m in members if m.status == FEEDBACK_PENDING] or [feedback]
    current = drops.feedback(feedback.id)
    if current.status != FEEDBACK_PENDING:
        return current  # answered meanwhile through another process
    target = answering(drops, feedback) if feedback.kind == KIND_OPERATOR or ack != "message" else ""
    fence = held() if held else None
    if held is not None and fence is None:
        raise LeaseLost(f"feedback {feedback.id}: this host does not hold the sender lease")
    if fence is not None:  # from here the message may reach WhatsApp before its mark: say who handed it on
        hand(drops.db, [member.id for member in members], fence)
    retrying = AsyncRetrying(retry=retry_if_exception_type(BridgeUnavailable), reraise=True,
                             wait=wait_exponential(multiplier=0.05, min=0.05, max=max_wait),
                             stop=stop_after_attempt(attempts) if attempts else stop_never)
    async for attempt in retrying:
        with attempt:
            if held is not None and held() != fence:
                raise LeaseLost(f"feedback {feedback.id}: the sender lease (token {fence.token}) ran out or moved")
            try:
                answer = await client.post(feedback, ack, target, fence)
            except BridgeUnavailable as exc:
                if attempt.retry_state.attempt_number in (1, 10) or attempt.retry_state.attempt_number % 100 == 0:
                    logger.warning("feedback {} for {}: {} (attempt {}, retrying)", feedback.kind,
                                   feedback.drop_number, exc, attempt.retry_state.attempt_number)
                for member in members:
                    drops.finish_feedback(member, FEEDBACK_PENDING, str(exc), fence=fence)
                raise
    error = "" if answer.status != FEEDBACK_FAILED else answer.message
    done = [drops.finish_feedback(member, answer.status, error, answer.bridge_message_id, fence=fence)
            for member in members]
    log = logger.error if answer.status == FEEDBACK_FAILED else logger.info
    log("feedback {} for {} {}: {}", feedback.kind, ", ".join(m.drop_number for m in members), answer.status,
        answer.message)
    return done[0]


class FeedbackSender:
    """Drains a project's pending feedback in order, in its own task; `wake()` after recording more."""

    def __init__(self, config: Config, project: ProjectConfig, drops: DropsDB) -> None:
        self.config = config
        self.project = project
        self.drops = drops
        self._wake = asyncio.Event()
        self._wake.set()  # pending feedback from before a restart goes out first
        self.waiting = 0  # pending feedback at the last look, less what went out since (for the status line)
        self.held: Held | None = None  # a cluster: the account's sender lease (monitors/lease_keeper.py)
        self._seen: dict[int, float] = {}  # held acknowledgement -> when this process first saw it (monotonic)
        self.log: RecoveryLog | None = None  # where failovers are written (the monitor process's)
        self.alerts: AlertManager | None = None
        self.senders: Senders | None = None  # while running: which of send_accounts sends now
        self.changed: Callable[[], None] = lambda: None  # the status line changed (a failover)
        self.fates: Fates | None = None  # a cluster: sends another host may have made (monitors/fate.py)
        self._revisited = -RECHECK_INTERVAL  # monotonic: the last look at feedback of unknown fate
        self._took: int | None = None  # the token under which another node's queued feedback was taken over

    def wake(self) -> None:
        self._wake.set()

    def _coalescing(self) -> bool:
        return self.project.feedback.coalesce_s > 0 and self.project.feedback.ack != "reaction"

    def _units(self, batch: list[Feedback]) -> tuple[list[list[Feedback]], float | None]:
        """The messages to post now, in order: each a list of the rows it carries (one row: as it is), and the
        seconds until the next held group falls due (None: nothing held). A message acknowledgement is held
        until `coalesce_s` after this process first saw the oldest pending one of its group."""
        units: list[list[Feedback]] = []
        groups: dict[str, list[Feedback]] = {}
        carriers: set[int] = set()
        # In doubt (another node handed it on alone): posted as it was, so that its copy is recognised
        doubted = self.fates.doubted(batch) if self.fates is not None else {}
        for row in batch:
            if row.carrier_id is not None:  # grouped before (a restart, or an earlier look): the same message
                if row.carrier_id not in carriers:
                    carriers.add(row.carrier_id)
                    units.append(self.drops.carried(row.carrier_id))
            elif row.kind == KIND_ACK and self._coalescing() and row.id not in doubted:
                groups.setdefault(row.recipient, []).append(row)
            else:
                units.append([row])
        now = time.monotonic()
        hold: float | None = None
        for rows in groups.values():
            first = min(self._seen.setdefault(row.id, now) for row in rows)
            wait = first + self.project.feedback.coalesce_s - now
            if wait > 0:
                hold = wait if hold is None else min(hold, wait)
            elif len(rows) == 1:
                units.append(rows)
            else:
                units.append(self.drops.carry(rows, self.held() if self.held else None))
        return [unit for unit in units if unit], hold

    async def _post(self, client: Poster, unit: list[Feedback]) -> float | None:
        """Post one unit; in a cluster, a unit another host may already have sent is found out first
        (monitors/fate.py). Returns the seconds until a unit still in doubt is to be judged again, else None."""
        ack = self.project.feedback.ack
        if self._coalescing() and unit[0].kind == KIND_ACK and all(r.status == FEEDBACK_PENDING for r in unit) and \
                (self.fates is None or not self.fates.doubted(unit)):  # one in doubt is found out as it was posted
            unit = await self._rejoin(client, unit)
        if len(unit) == 1 and unit[0].carrier_id is None:
            message, members = unit[0], ()
        else:  # one message for several drops quotes none of their posts
            drop = self.drops.drop(self.project.name, unit[0].drop_number)
            message, members, ack = coalesced(self.project, unit, drop.group_name if drop else ""), unit, "message"
        if self.fates is not None and not await self._settled(message, unit):
            return RECHECK_S
        await deliver(client, self.drops, message, ack=ack, held=self.held, members=members)
        for row in unit:
            self._seen.pop(row.id, None)
        return None

    async def _rejoin(self, client: Poster, unit: list[Feedback]) -> list[Feedback]:
        """`unit` (acknowledgements to one group, pending) with the rows of the group's messages still queued in the
        bridge, if it withdrew them: one message for all (monitors/store/rejoin.py). A message the bridge is sending
        or sent stays as it is. Only the lease's holder withdraws; the withdraw is retried until answered (an
        answer lost after the bridge withdrew must not leave those rows behind; asked again it answers the same)."""
        fence = self.held() if self.held else None
        if self.held is not None and fence is None:
            raise LeaseLost(f"feedback {unit[0].id}: this host does not hold the sender lease")
        queued = rejoin.queued_acks(self.drops, self.project.name, unit[0].recipient, fence)
        messages = queued_messages(self.drops, self.project, queued)
        if not messages:
            return unit
        retrying = AsyncRetrying(retry=retry_if_exception_type(BridgeUnavailable), reraise=True,
                                 wait=wait_exponential(multiplier=0.05, min=0.05, max=2.0), stop=stop_never,
                                 before_sleep=lambda state: state.attempt_number in (1, 10) and logger.warning(
                                     "feedback for {}: cannot withdraw the group's queued message yet: {} (attempt {},"
                                     " retrying)", self.project.name, state.outcome.exception(), state.attempt_number))
        async for attempt in retrying:
            with attempt:
                if self.held is not None and self.held() != fence:
                    raise LeaseLost(f"feedback {unit[0].id}: the sender lease ran out or moved")
                states = await client.withdraw(list(messages))
        withdrawn = [row for key, rows in messages.items() if states.get(key) == "withdrawn" for row in rows]
        if not withdrawn:
            return unit
        joined = rejoin.rejoin(self.drops, withdrawn, unit, fence)
        logger.info("feedback for {}: {} queued acknowledgement(s) withdrawn to go with {} in one message",
                    self.project.name, len(withdrawn), ", ".join(r.drop_number for r in unit))
        return joined

    async def _settled(self, message: Feedback, unit: list[Feedback]) -> bool:
        """False while a unit in doubt waits; else True, after marking it (found, unknown: nothing left to post)
        or deciding to post it."""
        assert self.fates is not None and self.held is not None
        pending = [row for row in unit if row.status == FEEDBACK_PENDING]
        doubts = self.fates.doubted(pending)
        if not doubts:
            return True
        fence = self.held()
        if fence is None:
            raise LeaseLost(f"feedback {message.id}: this host does not hold the sender lease")
        health = await self.senders.health() if self.senders is not None else None
        doubt = next(iter(doubts.values()))
        verdict, copy = self.fates.judge(message, doubt, Connection.of(health))
        if verdict == WAIT:
            return False
        self.fates.settle(verdict, copy, message, pending, doubt, fence)
        return verdict == SEND

    def _revisit(self) -> None:
        """In a cluster, while this host sends: feedback of unknown fate whose copy has arrived since (this host's
        bridge was away when it was judged) is found after all (monitors/fate.py); the rest waits for an operator."""
        if self.fates is None or self.held is None or self.held() is None or \
                time.monotonic() - self._revisited < RECHECK_INTERVAL:
            return
        self._revisited = time.monotonic()
        carriers: set[int] = set()
        for row in self.drops.unknown_feedback(self.project.name):
            if row.carrier_id is None:
                self.fates.found_later(row, [row])
            elif row.carrier_id not in carriers:  # one coalesced message: rebuilt as it was posted
                carriers.add(row.carrier_id)
                rows = self.drops.carried(row.carrier_id)
                drop = self.drops.drop(self.project.name, rows[0].drop_number)
                self.fates.found_later(coalesced(self.project, rows, drop.group_name if drop else ""),
                                       [r for r in rows if r.status == FEEDBACK_UNKNOWN])

    def _take_queued(self) -> float | None:
        """In a cluster, once per grant this host sends under: feedback another node's bridge accepted into its
        outbox under an older token is taken over, to be found out like a send in doubt (DropsDB.take_queued:
        that node, gone, would leave it queued for ever). The seconds until it may be, else None. One host: its
        bridge's durable outbox sends what it queued, as always."""
        if self.fates is None or self.held is None or (fence := self.held()) is None or fence.token == self._took:
            return None
        wait = self.drops.take_queued(self.project.name, fence, self.fates.cluster.lease_s)
        if wait is None:
            self._took = fence.token
        return wait

    def _batch(self) -> list[Feedback]:
        """Pending feedback to send now: one host alone, all of it; in a cluster, what this host claims under the
        sender lease (nothing while another host holds it)."""
        if self.held is None:
            return self.drops.pending_feedback(self.project.name)
        fence = self.held()
        return self.drops.claim_feedback(self.project.name, fence) if fence else []

    async def run(self) -> None:
        """While the drops store is down nothing is lost: a send whose answer could not be recorded stays
        pending and is posted again with the same Idempotency-Key, which the bridge answers from its outbox."""
        async with aiohttp.ClientSession() as http:
            from monitors.failover import Senders  # it imports this module
            client = self.senders = Senders(self.config, self.project, http, self.log, self.alerts, self.changed,
                                            self.drops, self.held)
            recheck = RECHECK_INTERVAL
            while True:
                await wait_event(self._wake, recheck)  # also picks up feedback queued by `wa-watchdog feedback`
                self._wake.clear()
                recheck = RECHECK_INTERVAL
                try:
                    await client.look_after_queued()
                    due = self._take_queued()
                    while batch := self._batch():
                        self.waiting = len(batch)
                        units, hold = self._units(batch)
                        if not units and hold is None:  # grouped elsewhere meanwhile (or the claim moved)
                            break
                        for unit in units:
                            again = await self._post(client, unit)
                            if again is not None:  # in doubt: judged again then, the others went on
                                hold = again if hold is None else min(hold, again)
                            self.waiting = max(0, self.waiting - len(unit))  # a carried unit may hold answered rows
                        if hold is not None:  # the rest falls due then (or sooner, when woken)
                            recheck = hold
                            break
                    if due is not None:  # what another node's bridge queued may be taken over then
                        recheck = min(recheck, due)
                    self._revisit()
                except StoreUnavailable as exc:
                    logger.warning("feedback for {} waits for the drops store: {}", self.project.name, exc)
                    recheck = STORE_RETRY
                except LeaseLost as exc:  # the lease keeper wakes this sender when it holds the lease again
                    logger.warning("feedback for {} stopped: {}", self.project.name, exc)
