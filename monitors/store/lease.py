"""The sender lease (issue 21): one host at a time sends an account's feedback, fenced by a token.

A row per sending account in `sender_leases` (PostgreSQL only: a cluster shares one database). Every
statement here is one conditional statement judged by the database's clock (`now()`), never a host's:

- **acquire** grants the lease when it is free, expired, or its holder is gone (none of the holder's lease
  connections for this lease is in pg_stat_activity, though it renewed since the server started: its processes
  died and their connections were reset, so another host need not wait out the lease; after a PostgreSQL restart
  it must, as the holder lives on and reconnects). A grant to another holder, or after expiry, adds 1 to the
  token: tokens only grow, the row is never deleted. A process of the holding node joins the node's grant
  (a restarted monitor keeps sending under the same token; several monitor processes share it).
- **renew** extends an unexpired lease of this holder and token; an expired one is never revived (the
  holder must acquire again, with a new token).
- **release** ends the lease now (a clean stop of the node's last process keeping it, `alone`, once its
  bridges were told), so another host takes over at its next look; a process whose siblings keep the lease
  leaves it to them.

The fence: every claim of outgoing work and every "sent" mark carries `FENCE` (the lease row with this
holder and token, unexpired) in its own statement, and a mark also needs the row's `claim_token`, so a
paused or partitioned holder that wakes up believing it holds the lease changes nothing after a takeover.
What the database cannot fence is the send itself: the holder stops sending `SAFETY` before the lease can
expire, measured on its monotonic clock from the *start* of the renew that granted it (the database's
expiry is later than that). pg_stat_activity is only a liveness hint for taking over sooner; the token is
the fence (advisory locks would not fence, and survive a dead client until TCP notices). A holder paused
inside a transaction is the one case a statement's fence cannot cover (its mark passed the fence before the
takeover, its COMMIT comes after): taking over an expired lease ends the old holder's sessions.
"""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import psycopg
from loguru import logger

from monitors.store.fence import Fence
from monitors.store.postgres import PostgresBackend, silence_bounds
from monitors.store.sql import StoreUnavailable, one

SAFETY = 0.2  # of lease_s: the holder stops sending this long before the database could expire its lease
RENEW_FRACTION = 0.2  # of lease_s: the holder renews this often (4 tries before it stops sending)
TAKE_OVER_EVERY = 0.5  # seconds between a standby's looks: a dead holder's session is noticed this soon

# A lease session of `node` for `account` (session_name's parts), other than this statement's own.
_SIBLING = ("SELECT 1 FROM pg_stat_activity a WHERE a.pid <> pg_backend_pid() "
            "AND split_part(a.application_name, ' ', 1) = 'wa-watchdog' AND split_part(a.application_name, ' ', 2) = "
            "'lease' AND split_part(a.application_name, ' ', 3) = {node} AND split_part(a.application_name, ' ', 4) = "
            "{account}")
# Gone: neither the session that renewed last nor another process of the holder keeping this lease is connected
# (a monitor of the node restarting, or one of several sharing the node's grant dying, hands nothing over), and the
# holder renewed since this server started: a restart ends every session while the holder lives (and its bridges
# send under its token until its own deadline), so a session missing after one is no sign of the holder's death.
# A session renamed `wa-watchdog leaving <node>` (a clean stop releasing the lease) is not gone until it released it:
# it tells its bridges first, and a takeover in between would not wait for that.
_HOLDER_GONE = ("(l.renewed_at > pg_postmaster_start_time() AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a "
                "WHERE a.pid = l.backend_pid AND a.application_name IN (l.session, 'wa-watchdog leaving ' || l.holder)) "
                "AND NOT EXISTS (" + _SIBLING.format(node="l.holder", account="l.account") + "))")
_SAME_GRANT = "(l.holder = excluded.holder AND l.expires_at > now())"
# `before`: the row as this statement found it, for the report of a takeover (its holder, whether it had
# released it, how long since it last renewed: the gap in sending). Then the grant itself.
ACQUIRE = (
    "WITH before AS (SELECT holder, session = '' AS released, EXTRACT(EPOCH FROM now() - renewed_at) AS silent_s, "
    "expires_at <= now() AS expired FROM sender_leases WHERE account = ?), "
    "granted AS (INSERT INTO sender_leases AS l (account, holder, token, session, backend_pid, acquired_at, renewed_at, "
    "expires_at) VALUES (?, ?, 1, ?, pg_backend_pid(), now(), now(), now() + make_interval(secs => ?)) "
    f"ON CONFLICT (account) DO UPDATE SET holder = excluded.holder, "
    f"token = l.token + CASE WHEN {_SAME_GRANT} THEN 0 ELSE 1 END, "
    f"acquired_at = CASE WHEN {_SAME_GRANT} THEN l.acquired_at ELSE now() END, "
    "session = excluded.session, backend_pid = excluded.backend_pid, renewed_at = now(), "
    "expires_at = excluded.expires_at "
    f"WHERE l.expires_at <= now() OR l.holder = excluded.holder OR {_HOLDER_GONE} "
    "RETURNING l.account, l.token, l.holder, l.acquired_at), "
    # A new token is a grant: kept in the history (joining the node's grant is not one: the token is known).
    "logged AS (INSERT INTO sender_lease_grants (account, token, holder, acquired_at, previous, how) "
    "SELECT g.account, g.token, g.holder, g.acquired_at, b.holder, CASE WHEN b.holder IS NULL THEN 'first' "
    "WHEN b.released THEN 'released' WHEN b.expired THEN 'expired' ELSE 'holder_gone' END "
    "FROM granted g LEFT JOIN before b ON true ON CONFLICT (account, token) DO NOTHING) "
    "SELECT g.token, b.holder, b.released, b.silent_s, b.expired FROM granted g LEFT JOIN before b ON true")
RENEW = ("UPDATE sender_leases SET renewed_at = now(), expires_at = now() + make_interval(secs => ?), "
         "session = ?, backend_pid = pg_backend_pid() "
         "WHERE account = ? AND holder = ? AND token = ? AND expires_at > now() RETURNING token")
# Only the node's last process keeping the lease releases it: its siblings go on sending under the same grant.
RELEASE = ("UPDATE sender_leases SET expires_at = now(), session = '' WHERE account = ? AND holder = ? AND token = ? "
           "AND expires_at > now() AND NOT EXISTS (" + _SIBLING.format(node="holder", account="account")
           + ") RETURNING token")
STATE = ("SELECT account, holder, token, acquired_at, renewed_at, expires_at, expires_at > now(), "
         "EXTRACT(EPOCH FROM now() - renewed_at) FROM sender_leases")


@dataclass(frozen=True)
class Takeover:
    """A grant that ended another holder's lease without its release: who, and how long it had been silent."""

    holder: str
    silent_s: float
    ended: int = 0  # its database sessions the new holder ended (after an expiry only)


@dataclass(frozen=True)
class LeaseState:
    """A lease row as the database judges it now (for status, /metrics, tests)."""

    account: str
    holder: str
    token: int
    acquired_at: str
    renewed_at: str
    expires_at: str
    valid: bool
    renewed_ago_s: float


def lease_states(backend: PostgresBackend) -> list[LeaseState]:
    return [LeaseState(*row[:6], bool(row[6]), float(row[7]))
            for row in backend.rows(STATE + " ORDER BY account")]


@dataclass(frozen=True)
class Grant:
    """One grant of a lease (`sender_lease_grants`): `token` to `holder` at `acquired_at` (epoch seconds, the
    database's clock), taken from `previous` (None: the first) `how`: first, expired, released, holder_gone."""

    account: str
    token: int
    holder: str
    acquired_at: float
    previous: str | None
    how: str


def grants(backend: PostgresBackend, account: str) -> list[Grant]:
    """Every grant of `account`'s lease, oldest first (the lease row keeps only the newest)."""
    return [Grant(row[0], int(row[1]), row[2], float(row[3]), row[4], row[5]) for row in backend.rows(
        "SELECT account, token, holder, EXTRACT(EPOCH FROM acquired_at), previous, how FROM sender_lease_grants "
        "WHERE account = ? ORDER BY token", (account,))]


def session_name(node: str, account: str) -> str:
    """This lease connection's application_name: unique, so a reused backend pid is never mistaken for it; naming
    the node and the account, so that the node's other processes keeping the same lease are found (`_SIBLING`).
    PostgreSQL keeps 63 bytes: a name cut short only loses that (the exact session is still matched)."""
    return f"wa-watchdog lease {node} {account} {secrets.token_hex(6)}"[:63]


# After a takeover, the sessions of the node taken over (its lease and drops store connections) in this database.
# A holder paused inside a transaction keeps its row locks, and may commit a mark its fence allowed before the
# takeover: PostgreSQL cannot tell a paused client from a slow one (a pipelined transaction is not even "idle in
# transaction"), so the new holder ends those sessions; the paused host's processes reconnect when they resume.
# pg_terminate_backend waits (up to 2 s, PostgreSQL 14+) until each has ended: its row locks are gone when the
# new holder claims (a claim skips locked rows, and would find nothing to do).
_NODE_SESSIONS = ("SELECT COUNT(pg_terminate_backend(pid, 2000)) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                  "AND datname = current_database() AND split_part(application_name, ' ', 1) = 'wa-watchdog' "
                  "AND ((split_part(application_name, ' ', 2) = ? AND split_part(application_name, ' ', 3) = '') "
                  "OR (split_part(application_name, ' ', 2) = 'lease' AND split_part(application_name, ' ', 3) = ?))")


class SenderLease:
    """One account's lease as one holder (a node) sees it, on a connection of its own.

    Blocking calls (psycopg); callers in an event loop run them in a thread. `fence()` is what may send now.
    """

    def __init__(self, url: str, schema: str, account: str, node: str, lease_s: float) -> None:
        self.account = account
        self.node = node
        self.lease_s = lease_s
        self.session = session_name(node, account)
        # A silent server must not hold a renew for minutes: unacknowledged data aborts the connection (sooner
        # than the store's sessions: the holder stops sending at 1 - SAFETY of its lease).
        server, client = silence_bounds(lease_s)
        self.db = PostgresBackend(url, schema, application_name=self.session, settings=server,
                                  **{**client, "tcp_user_timeout": max(1000, int(lease_s * 1000 * SAFETY))})
        self.token: int | None = None
        self._valid_until = 0.0  # monotonic
        self.takeover: Takeover | None = None  # what the last grant took over (for the keeper's report)
        self._leaving = False  # released: the session no longer named as a holder's (release)

    @property
    def valid_until(self) -> float:
        """CLOCK_MONOTONIC seconds until which the held token may send (what the bridges are told)."""
        return self._valid_until

    def fence(self) -> Fence | None:
        """The fence to send under now, or None: not held, or too close to the database's expiry to send."""
        if self.token is None or time.monotonic() >= self._valid_until:
            return None
        return Fence(self.account, self.node, self.token)

    def _granted(self, started: float, token: int) -> int:
        self.token = token
        self._valid_until = started + self.lease_s * (1 - SAFETY)
        return token

    def acquire(self) -> int | None:
        """Take the lease (or join this node's grant); its token, or None when another holder has it."""
        started = time.monotonic()
        try:
            if self._leaving:
                self._name(self.session)
            row = one(self.db.rows(ACQUIRE, (self.account, self.account, self.node, self.session, self.lease_s)))
        except StoreUnavailable:
            return None
        if row is None:
            self.token = None
            return None
        token, before, released, silent_s, expired = row
        took = before not in (None, self.node) and not released
        # Expired: the holder went silent, its processes may be paused mid-transaction. Not expired: its lease
        # session is gone, with the process that held it (and its locks); its siblings are alive and stay.
        ended = self._end_sessions(before) if took and expired else 0
        self.takeover = Takeover(before, float(silent_s), ended) if took else None
        return self._granted(started, token)

    def _end_sessions(self, node: str) -> int:
        """End the sessions of the node taken over (see _NODE_SESSIONS); how many."""
        try:
            return int(self.db.rows(_NODE_SESSIONS, (node, node))[0][0])
        except (StoreUnavailable, psycopg.Error) as exc:  # another role's sessions: its locks wait for TCP
            logger.warning("sender lease of {}: cannot end {}'s sessions: {}", self.account, node, exc)
            return 0

    def renew(self) -> bool:
        """Extend the lease held under `token`; False (and not held) when it was lost or expired."""
        if self.token is None:
            return False
        started = time.monotonic()
        try:
            row = one(self.db.rows(RENEW, (self.lease_s, self.session, self.account, self.node, self.token)))
        except StoreUnavailable:
            return False  # the last grant still runs out on its own deadline
        if row is None:
            self.token = None
            return False
        self._granted(started, row[0])
        return True

    def keep(self) -> Fence | None:
        """One look: renew what is held, else try to acquire; the fence to send under now."""
        if not self.renew():
            self.acquire()
        return self.fence()

    def newest_token(self) -> int | None:
        """The lease's token now, whoever holds it (None: never granted, or the database is away)."""
        try:
            row = one(self.db.rows("SELECT token FROM sender_leases WHERE account = ?", (self.account,)))
        except StoreUnavailable:
            return None
        return int(row[0]) if row else None

    def alone(self) -> bool:
        """Does this process hold the lease with no other process of the node keeping it (a `release` now would end
        it)? Asked before a clean stop's release, so that its bridges are told first (monitors/lease_keeper.py).
        Asked of the database only: the session's name is changed by `release`."""
        if self.token is None:
            return False
        try:
            return not self.db.rows(_SIBLING.format(node="?", account="?"), (self.node, self.account))
        except StoreUnavailable:
            return False  # it expires on its own

    def release(self) -> bool:
        """End the lease now (a clean stop): another host takes over at its next look, not after lease_s. Unless
        another process of this node keeps it: then it stays theirs. This session first stops counting as one of
        them, so of the node's processes stopping together (the whole host) the last to look releases it. True if
        this call ended it (False: a sibling keeps it, or the database is away and it expires on its own)."""
        released = False
        if self.token is not None:
            try:
                self._name(f"wa-watchdog leaving {self.node}")  # until it asks again (acquire)
                released = bool(self.db.rows(RELEASE, (self.account, self.node, self.token)))
            except StoreUnavailable:
                pass  # it expires on its own
            self.token = None
        return released

    def _name(self, application_name: str) -> None:
        self.db.rows("SELECT set_config('application_name', ?, false)", (application_name,))
        self._leaving = application_name != self.session

    def close(self) -> None:
        self.db.close()
