"""What `scripts/chaos --cluster` checks once it is over (scripts/benchmarks/chaos_cluster.py): every drop recorded
once, every acknowledgement in the group once (or `unknown`), none sent under a token that was no longer current when
WhatsApp got it, no device connected twice, every drop event's webhook received at least once.

The token check is exact: each send is judged by the token its bridge sent it under (the fenced outbox row of the
sending host's messages.db keeps it) against the lease's durable history (`sender_lease_grants`: every grant, by the
database's clock), not against a poll of the lease: a send is stale when a later grant was made before WhatsApp got
it (the simulator's time of the send, on this machine's clock as the database reads it, the run's shift taken out).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from monitors.store.lease import Grant, grants
from monitors.store.postgres import PostgresBackend
from scripts.benchmarks.chaos_checks import drop_events
from scripts.benchmarks.system_run import PHONE, RunningSystem, group_jid, http
from scripts.benchmarks.webhook_receiver import WebhookReceiver
from watchdog.shared import clock

ACCOUNT = "main"
GRANT_HOW = ("first", "expired", "released", "holder_gone")  # sender_lease_grants.how


@dataclass(frozen=True)
class History:
    """The lease's grants, and how far the database's clock is behind the clock seam (the simulator's)."""

    grants: list[Grant]
    offset: float  # seconds to add to a database time to get the seam's

    @classmethod
    def read(cls, pg_url: str) -> History:
        reader = PostgresBackend(pg_url, "wa_watchdog")
        try:
            before = clock.now_s()
            [(db_now,)] = reader.rows("SELECT EXTRACT(EPOCH FROM clock_timestamp())")
            offset = (before + clock.now_s()) / 2 - float(db_now)  # the run's clock shift, if any (and jitter)
            return cls(grants(reader, ACCOUNT), offset)
        finally:
            reader.close()

    def superseding(self, node: str, token: int | None, at: float) -> tuple[Grant | None, str]:
        """Was a send by `node` under `token` at `at` (the seam's epoch seconds) stale? (the grant that ended
        `token` before `at`, or None; why), "" when it was `node`'s token and current."""
        mine = next((g for g in self.grants if g.token == token), None)
        if token is None or mine is None:
            return None, "unfenced" if token is None else f"token {token} never granted"
        if mine.holder != node:
            return mine, f"token {token} was {mine.holder}'s"
        later = next((g for g in self.grants if g.token > token), None)
        if later is not None and later.acquired_at + self.offset <= at:
            return later, "superseded"
        return None, ""


def sent_tokens(host: RunningSystem) -> dict[str, int | None]:
    """The token each message of the host's outbox went out under (its fenced row; None: unfenced), by the bridge's
    id, by WhatsApp's where it chose another (`--server-ids`, as through neonize), and by chat and text (`chat
    text`) for a row whose WhatsApp id was never recorded (its host killed between the send and the mark; an ack's
    text names its drop). A row is queued again under a new token only once withdrawn, and a row handed to WhatsApp
    is never withdrawn."""
    rows = host.query("messages", "SELECT message_id, sent_id, recipient_jid, text, fence_token FROM outbox "
                                  "WHERE status IN ('sent', 'pending', 'doubt') ORDER BY seq")
    tokens: dict[str, int | None] = {}
    for message_id, sent_id, chat, text, token in rows:
        tokens.update({message_id: token, f"{chat} {text}": token, **({sent_id: token} if sent_id else {})})
    return tokens


def acks(system: RunningSystem) -> list[dict]:
    """What reached the group (/sim/sent): one record per message id, the node that sent it first."""
    return [s for s in system.sent() if s["recipient"] == group_jid(1)]


def settled(a: RunningSystem, posted: list[str], receiver: WebhookReceiver) -> bool:
    """Every drop recorded and acknowledged, no feedback pending, every drop event received."""
    acked = {s["text"].split()[1] for s in acks(a)}
    return (a.query("drops", "SELECT COUNT(*) FROM drops") == [(len(posted),)] and acked >= set(posted)
            and a.query("drops", "SELECT COUNT(*) FROM feedback WHERE status IN ('pending', 'queued')") == [(0,)]
            and drop_events(a).keys() <= receiver.accepted().keys())


@dataclass(frozen=True)
class Stale:
    """An acknowledgement WhatsApp got from `node` at `at` under `token` that was not current then (`why`)."""

    drop: str
    node: str
    at: float
    token: int | None
    why: str
    current: Grant | None  # the grant that had ended `token` (or whose token it was)
    offset: float  # History.offset: the grant's time on the send's clock

    def __str__(self) -> str:
        text = f"{self.drop}'s ack sent by {self.node} under token {self.token}"
        if self.why != "superseded" or self.current is None:
            return f"{text}: {self.why}"
        late = self.at - (self.current.acquired_at + self.offset)
        return (f"{text} {late:.3f} s after token {self.current.token} went to {self.current.holder} "
                f"({self.current.how})")


@dataclass
class Outcome:
    counts: dict[str, int] = field(default_factory=dict)
    stale: list[Stale] = field(default_factory=list)
    odd: list[str] = field(default_factory=list)  # drops missed, or recorded or acknowledged twice: to look at

    @property
    def ok(self) -> bool:
        return all(n == 0 for key, n in self.counts.items() if key in FAILURES)


FAILURES = ("drops missed", "drops recorded twice", "acks missing", "acks twice", "sent by a host not holding the "
            "current token", "re-sent by a bridge (same id)", "two connections of a device", "webhook events lost")


def check(a: RunningSystem, hosts: dict[str, RunningSystem], posted: list[str], history: History,
          receiver: WebhookReceiver) -> Outcome:
    """`hosts` by node name: whose messages.db says what token a send went under."""
    recorded = Counter(d for (d,) in a.query("drops", "SELECT d.drop_number FROM drop_events e "
                                                       "JOIN drops d ON d.id = e.drop_id"))
    group = acks(a)
    counted = Counter(s["text"].split()[1] for s in group)
    unknown = a.query("drops", "SELECT COUNT(*) FROM feedback WHERE status = 'unknown'")[0][0]
    devices = http("GET", f"{a.sim_url}/sim/sessions")[PHONE]["devices"]  # type: ignore[index]
    events, accepted = drop_events(a), receiver.accepted()
    tokens = {node: sent_tokens(host) for node, host in hosts.items()}
    outcome = Outcome()
    for sent in group:
        at = datetime.fromisoformat(sent["time"]).timestamp()
        mine = tokens.get(sent["node"], {})
        token = mine.get(sent["id"], mine.get(f"{sent['recipient']} {sent['text']}"))
        current, why = history.superseding(sent["node"], token, at)
        if why:
            outcome.stale.append(Stale(sent["text"].split()[1], sent["node"], at, token, why, current,
                                       history.offset))
    outcome.odd = sorted({d for d, n in recorded.items() if n > 1} | {d for d, n in counted.items() if n > 1}
                         | {d for d in posted if d not in recorded or d not in counted})
    outcome.counts = {
        "drops posted": len(posted), "drops recorded": sum(1 for d in posted if d in recorded),
        "drops missed": sum(1 for d in posted if d not in recorded),
        "drops recorded twice": sum(1 for n in recorded.values() if n > 1),
        "acks once": sum(1 for n in counted.values() if n == 1),
        "acks twice": sum(1 for n in counted.values() if n > 1),
        "acks missing": sum(1 for d in posted if d not in counted),
        "feedback unknown": unknown,
        "sent by a host not holding the current token": len(outcome.stale),
        "re-sent by a bridge (same id)": sum(d["resent"] for d in devices),
        "two connections of a device": sum(d["stream_replaced"] for d in devices),  # the older one still answered
        "half-open connections replaced (not two)": sum(d["dead_replaced"] for d in devices),
        "lease grants": len(history.grants),
        **{f"lease grants: {how}": sum(g.how == how for g in history.grants) for how in GRANT_HOW},
        "webhook events": len(events),
        "webhook events lost": sum(1 for event_id in events if event_id not in accepted),
        "webhook redeliveries": sum(n - 1 for n in accepted.values()),
    }
    return outcome
