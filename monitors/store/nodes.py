"""The nodes of a cluster (issue 21) in PostgreSQL: each node renews its row while its processes run, and each
other node alerts once on a silence. Judged by the database's clock (`now()`), like the leases, never a host's.

Every process of a node that keeps a lease renews the node's row (monitors/lease_keeper.py): one statement every
`lease_s / 2`, the same row. A silence is a node's `last_seen` older than `[cluster] node_silent_s`; the observer
records it in `cluster_silences` keyed by (node, observer, last_seen), so of an observer's processes only the
insert that wins alerts, and a node that comes back and goes silent again is a new silence.
"""
from __future__ import annotations

from dataclasses import dataclass

from monitors.store.postgres import PostgresBackend

# One statement, one round trip: renew `node`'s row, then (when `judge`) record each other node's silence longer
# than `silent_s` that this node has not recorded yet. `?`: node, judge, silent_s. Returns the new silences.
BEAT = ("WITH seen AS (INSERT INTO cluster_nodes (node, first_seen, last_seen) VALUES (?, now(), now()) "
        "ON CONFLICT (node) DO UPDATE SET last_seen = now() RETURNING node) "
        "INSERT INTO cluster_silences (node, seen_by, last_seen, alerted_at) "
        "SELECT n.node, seen.node, n.last_seen, now() FROM cluster_nodes n, seen "
        "WHERE ? AND n.node <> seen.node AND n.last_seen < now() - make_interval(secs => ?) ON CONFLICT DO NOTHING "
        "RETURNING node, EXTRACT(EPOCH FROM now() - last_seen)")
STATE = ("SELECT node, first_seen, last_seen, EXTRACT(EPOCH FROM now() - last_seen) FROM cluster_nodes "
         "ORDER BY node")


@dataclass(frozen=True)
class NodeState:
    """A node's row as the database judges it now (for status, the console, /metrics)."""

    node: str
    first_seen: str
    last_seen: str
    seen_ago_s: float


def beat(backend: PostgresBackend, node: str, silent_s: float, judge: bool = True) -> list[tuple[str, float]]:
    """Record that `node` is alive now; with `judge`, the other nodes silent for `silent_s` that `node` has not
    alerted on yet: (node, seconds silent)."""
    return [(other, float(ago)) for other, ago in backend.rows(BEAT, (node, judge, silent_s))]


def node_states(backend: PostgresBackend) -> list[NodeState]:
    return [NodeState(node, first, last, float(ago)) for node, first, last, ago in backend.rows(STATE)]
