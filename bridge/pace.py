"""When the next message may go: the account's pace, so the number does not look like a bulk sender.

WhatsApp restricts numbers that send too much, too fast, too uniformly (docs/OPERATIONS.md, "Choosing
the pace", has the published guidance the defaults come from). The pace has four parts:

- an account budget of messages per minute, hour and day (the minute budget is also spread evenly: 5 a minute
  is one every 12 s, never five at once);
- reactions (an acknowledgement's ✅: no new message in the chat) spread by their own minute budget, not
  counted in the messages';
- a minimum gap plus random jitter between two messages to one chat (reactions excepted: they add no
  message to the chat);
- an optional "typing…" presence before a text, as long as a person would take to type it (capped);
- a ramp after a reconnect: the account starts at RAMP_START of its rate and is back to full after `ramp_s`.

`Pacer.plan` projects the whole queue onto this pace: the next row to send, each row's position and
expected time, and when the queue will be empty. One chat's rows keep their order (the head of a chat
goes first); across chats a chat holding operator feedback goes first, then the earliest due.
Times are monotonic seconds; `now` is injectable so tests and the benchmark need not wait.
"""
from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

RAMP_START = 0.25  # fraction of the account's rate right after a reconnect
WINDOWS = ((60.0, "per_minute"), (3600.0, "per_hour"), (86400.0, "per_day"))
OPERATOR = "operator"  # the priority of operator feedback (monitors' KIND_OPERATOR)
PLAN_LIMIT = 300  # rows projected one by one (cost: rows x chats); beyond them, extrapolated from the budget


@dataclass(frozen=True)
class PaceConfig:
    """`[accounts.NAME.pace]`: see docs/OPERATIONS.md, "Choosing the pace" (0 turns a part off)."""

    per_minute: int = 5
    per_hour: int = 120
    per_day: int = 1000
    reactions_per_minute: int = 60
    chat_gap_s: float = 30.0
    chat_jitter_s: float = 30.0
    typing: bool = True
    typing_chars_per_s: float = 15.0
    typing_max_s: float = 6.0
    ramp_s: float = 300.0

    def typing_s(self, text: str) -> float:
        """How long "typing…" shows before `text` (0: no presence)."""
        if not self.typing or not text or self.typing_chars_per_s <= 0:
            return 0.0
        return min(self.typing_max_s, len(text) / self.typing_chars_per_s)


@dataclass(frozen=True)
class Queued:
    """What the pace needs to know of an outbox row."""

    seq: int
    chat: str
    priority: str  # OPERATOR or ""
    reaction: bool
    text_len: int


@dataclass(frozen=True)
class Plan:
    order: list[tuple[Queued, float]]  # rows in the order they will go, each with its expected monotonic time
    drained_at: float | None  # when the last pending row is expected out (None: nothing pending)

    def position(self, seq: int) -> int | None:
        """1-based place of a row in the queue (None if not pending)."""
        return next((i for i, (row, _) in enumerate(self.order, 1) if row.seq == seq), None)


class Pacer:
    def __init__(self, pace: PaceConfig, now: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self.pace = pace
        self.now = now
        self.rng = rng or random.Random()
        self.sent: deque[float] = deque()  # message send times in the last day
        self.reacted: deque[float] = deque()  # reaction send times (the last one is what counts)
        self.chat_free: dict[str, float] = {}  # chat -> earliest time for its next message (gap + jitter drawn)
        self.connected_at: float | None = None

    def connected(self) -> None:
        """A (re)connect: the ramp starts over."""
        self.connected_at = self.now()

    def record(self, chat: str, reaction: bool, at: float | None = None) -> None:
        """A message went out to `chat` (at `at`, default now)."""
        at = self.now() if at is None else at
        if reaction:
            self.reacted.append(at)
            if len(self.reacted) > 1:
                self.reacted.popleft()
            return
        self.sent.append(at)
        while self.sent and self.sent[0] <= at - WINDOWS[-1][0]:
            self.sent.popleft()
        self.chat_free[chat] = at + self.pace.chat_gap_s + self.rng.uniform(0, self.pace.chat_jitter_s)

    def spacing(self, at: float, reaction: bool = False) -> float:
        """The even spread of the minute budget (messages', or reactions') at `at`, slower during the ramp after
        a reconnect."""
        per_minute = self.pace.reactions_per_minute if reaction else self.pace.per_minute
        if per_minute <= 0:
            return 0.0
        rate = 1.0
        if self.connected_at is not None and self.pace.ramp_s > 0:
            progress = min(1.0, max(0.0, (at - self.connected_at) / self.pace.ramp_s))
            rate = RAMP_START + (1 - RAMP_START) * progress
        return 60.0 / per_minute / rate

    def earliest(self, sent: Sequence[float], at: float, reaction: bool = False) -> float:
        """The earliest time ≥ `at` the account's budgets allow another message (or reaction), given the times
        of those sent before (ascending)."""
        while True:
            due = at
            if sent:
                due = max(due, sent[-1] + self.spacing(at, reaction))
            for window, name in WINDOWS[1:] if not reaction else ():
                limit = getattr(self.pace, name)
                if 0 < limit <= len(sent) and sent[-limit] > due - window:  # the window already holds `limit`
                    due = sent[-limit] + window
            if due <= at:
                return at
            at = due

    def plan(self, rows: Sequence[Queued], depth: int | None = None, limit: int | None = None) -> Plan:
        """Project `rows` (pending, in seq order) onto the pace: what goes when. `depth`: all pending rows, when
        `rows` is only the first PLAN_LIMIT of them (the rest extrapolated at the budget's rate); `limit`: stop
        after that many (the drain needs only the first)."""
        now = self.now()
        sent, reacted = list(self.sent), list(self.reacted)
        chat_free = dict(self.chat_free)
        mean_gap = self.pace.chat_gap_s + self.pace.chat_jitter_s / 2
        queues: dict[str, deque[Queued]] = {}
        for row in rows:
            queues.setdefault(row.chat, deque()).append(row)
        urgent = {chat for chat, queue in queues.items() if any(r.priority == OPERATOR for r in queue)}
        order: list[tuple[Queued, float]] = []
        at = now
        while queues and (limit is None or len(order) < limit):
            # The account's budgets give one earliest time per kind; a message also waits for its chat's gap
            # (a later moment never meets a tighter budget: the ramp only loosens it).
            message_due, reaction_due = self.earliest(sent, at), self.earliest(reacted, at, True)
            due, _, chat = min((reaction_due if queue[0].reaction else max(message_due, chat_free.get(c, now)),
                                queue[0].seq, c) for c, queue in queues.items() if not urgent or c in urgent)
            row = queues[chat].popleft()
            if not queues[chat]:
                del queues[chat]
            if not any(r.priority == OPERATOR for r in queues.get(chat, ())):
                urgent.discard(chat)
            order.append((row, due))
            if row.reaction:
                reacted.append(due)
            else:
                sent.append(due)
                chat_free[chat] = due + mean_gap
            at = due
        drained = order[-1][1] if order else None
        if drained is not None and depth is not None and depth > len(order):
            drained += (depth - len(order)) * self.spacing(drained)
        return Plan(order, drained)
