"""What `scripts/chaos --cluster` checks once it is over (scripts/benchmarks/chaos_cluster.py), and the lease's
history it needs for that: every drop recorded once, every acknowledgement in the group once (or `unknown`),
no acknowledgement sent by a host not holding the token current when WhatsApp got it, no device connected twice,
every drop event's webhook received at least once."""
from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from monitors.store.postgres import PostgresBackend
from monitors.store.sql import StoreUnavailable
from scripts.benchmarks.chaos_checks import drop_events
from scripts.benchmarks.system_run import PHONE, RunningSystem, group_jid, http
from scripts.benchmarks.webhook_receiver import WebhookReceiver
from watchdog.shared.recovery_log import RecoveryLog

GRANTS = "SELECT token, holder, EXTRACT(EPOCH FROM acquired_at) FROM sender_leases WHERE account = 'main'"


@dataclass(frozen=True)
class Grant:
    token: int
    holder: str
    at: float  # epoch seconds, the database's clock (or, for a grant only the holder's log saw, the holder's)


class LeaseWatch(threading.Thread):
    """Polls the sender lease every `every` s for its grants (token, holder, when): the history the check of
    "sent only under the current token" needs. A grant shorter than `every` is found in the holders' recovery
    logs instead (`grants`)."""

    def __init__(self, pg_url: str, every: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pg_url = pg_url
        self.every = every
        self.halt = threading.Event()
        self.seen: dict[int, Grant] = {}

    def run(self) -> None:
        reader = PostgresBackend(self.pg_url, "wa_watchdog")
        try:
            while not self.halt.wait(self.every):
                try:
                    for token, holder, at in reader.rows(GRANTS):
                        self.seen.setdefault(token, Grant(token, holder, float(at)))
                except StoreUnavailable:  # PostgreSQL restarted: the next look reconnects
                    pass
        finally:
            reader.close()

    def grants(self, hosts: list[RunningSystem]) -> list[Grant]:
        """Every grant, oldest first: those polled, and those only the hosts' recovery logs recorded."""
        grants = dict(self.seen)
        for host in hosts:
            for r in RecoveryLog(host.data_dir / "recoveries.jsonl").read():
                if r.get("event") == "lease" and r.get("change") in ("acquired", "taken_over"):
                    grants.setdefault(r["token"], Grant(r["token"], r["node"], r["time"]))
        return sorted(grants.values(), key=lambda g: g.token)


def holder_at(grants: list[Grant], at: float) -> Grant | None:
    """The grant current at `at`: the last granted before it (tokens only grow)."""
    return next((g for g in reversed(grants) if g.at <= at), None)


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
    """An acknowledgement WhatsApp got from `node` at `at` while `current` (another node's, or none) was the grant."""

    drop: str
    node: str
    at: float
    current: Grant | None

    def __str__(self) -> str:
        held = f"token {self.current.token} held by {self.current.holder}" if self.current else "no grant yet"
        return f"{self.drop}'s ack sent by {self.node} while {held}"


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


def check(a: RunningSystem, hosts: list[RunningSystem], posted: list[str], grants: list[Grant],
          receiver: WebhookReceiver) -> Outcome:
    recorded = Counter(d for (d,) in a.query("drops", "SELECT d.drop_number FROM drop_events e "
                                                       "JOIN drops d ON d.id = e.drop_id"))
    group = acks(a)
    counted = Counter(s["text"].split()[1] for s in group)
    unknown = a.query("drops", "SELECT COUNT(*) FROM feedback WHERE status = 'unknown'")[0][0]
    devices = http("GET", f"{a.sim_url}/sim/sessions")[PHONE]["devices"]  # type: ignore[index]
    events, accepted = drop_events(a), receiver.accepted()
    outcome = Outcome()
    for sent in group:
        at = datetime.fromisoformat(sent["time"]).timestamp()
        current = holder_at(grants, at)
        if current is None or current.holder != sent["node"]:
            outcome.stale.append(Stale(sent["text"].split()[1], sent["node"], at, current))
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
        "lease grants": len(grants),
        "webhook events": len(events),
        "webhook events lost": sum(1 for event_id in events if event_id not in accepted),
        "webhook redeliveries": sum(n - 1 for n in accepted.values()),
    }
    return outcome
