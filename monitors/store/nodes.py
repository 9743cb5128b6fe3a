"""The nodes of a cluster (issue 21) in PostgreSQL: each node renews its row while its processes run, and each
other node alerts once on a silence. Judged by the database's clock (`now()`), like the leases, never a host's.

Every process of a node that keeps a lease renews the node's row (monitors/lease_keeper.py): one statement every
`lease_s / 2`, the same row. A silence is a node's `last_seen` older than `[cluster] node_silent_s`; the observer
records it in `cluster_silences` keyed by (node, observer, last_seen), so of an observer's processes only the
insert that wins alerts, and a node that comes back and goes silent again is a new silence.
"""
from __future__ import annotations

from dataclasses import dataclass

from loguru import logger

from monitors.store.fence import store_session_name
from monitors.store.postgres import PostgresBackend
from watchdog.shared.migrations import Executor

# One statement, one round trip: renew `node`'s row, then (when `judge`) record each other node's silence longer
# than `silent_s` that this node has not recorded yet. `?`: node, judge, silent_s. Returns the new silences.
BEAT = ("WITH seen AS (INSERT INTO cluster_nodes (node, first_seen, last_seen) VALUES (?, now(), now()) "
        "ON CONFLICT (node) DO UPDATE SET last_seen = now() RETURNING node) "
        "INSERT INTO cluster_silences (node, seen_by, last_seen, alerted_at) "
        "SELECT n.node, seen.node, n.last_seen, now() FROM cluster_nodes n, seen "
        "WHERE ? AND n.node <> seen.node AND n.last_seen < now() - make_interval(secs => ?) ON CONFLICT DO NOTHING "
        "RETURNING node, EXTRACT(EPOCH FROM now() - last_seen)")
# The drops store sessions of another node silent for `?` seconds, in a transaction open that long, that were
# connected at the node's last renewal: a paused host (a frozen VM) inside a transaction. Its kernel still answers,
# so TCP keeps its sessions, and their row locks hold back the other hosts' recording of the same drops for the
# whole pause (a takeover ends them only for a lease holder). PostgreSQL cannot bound it alone: the store's
# transactions are pipelined, so a paused one is "active", waiting for its client, never "idle in transaction"
# (idle_in_transaction_session_timeout never fires). A node starting, or back after a stop, may run a long migration
# before it renews: sessions newer than its last renewal are left alone, and so are another role's (not ours to end:
# they wait for their host). `?`: the store sessions' name prefix, this node, stalled_s, stalled_s.
END_STALLED = ("SELECT COUNT(pg_terminate_backend(a.pid)) FROM pg_stat_activity a JOIN cluster_nodes n "
               "ON a.application_name = ? || n.node WHERE a.datname = current_database() AND n.node <> ? "
               "AND n.last_seen < now() - make_interval(secs => ?) AND a.backend_start < n.last_seen "
               "AND a.xact_start < now() - make_interval(secs => ?) AND a.usename = current_user")
STATE = ("SELECT node, first_seen, last_seen, EXTRACT(EPOCH FROM now() - last_seen) FROM cluster_nodes "
         "ORDER BY node")


@dataclass(frozen=True)
class NodeState:
    """A node's row as the database judges it now (for status, the console, /metrics)."""

    node: str
    first_seen: str
    last_seen: str
    seen_ago_s: float


def beat(backend: PostgresBackend, node: str, silent_s: float, judge: bool = True,
         stalled_s: float | None = None) -> list[tuple[str, float]]:
    """Record that `node` is alive now; with `judge`, the other nodes silent for `silent_s` that `node` has not
    alerted on yet: (node, seconds silent). With `stalled_s`, in the same transaction, end the other nodes'
    stalled transactions (END_STALLED): a paused host's locks last about `stalled_s`, not its whole pause."""
    with backend.transaction() as tx:
        silences = [(other, float(ago)) for other, ago in tx.rows(BEAT, (node, judge, silent_s))]
        if stalled_s is not None:
            _end_stalled(tx, node, stalled_s)
    return silences


def _end_stalled(tx: Executor, node: str, stalled_s: float) -> None:
    [(ended,)] = tx.rows(END_STALLED, (store_session_name(""), node, stalled_s, stalled_s))
    if ended:
        logger.warning("cluster node {}: ended {} drops store session(s) of a node silent for over {:g} s inside a "
                       "transaction (their locks held back the recording of drops)", node, ended, stalled_s)


def node_states(backend: PostgresBackend) -> list[NodeState]:
    return [NodeState(node, first, last, float(ago)) for node, first, last, ago in backend.rows(STATE)]
