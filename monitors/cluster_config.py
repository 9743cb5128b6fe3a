"""`[cluster]`: this host's place in a cluster of hosts watching the same numbers (issue 21).

```toml
[cluster]
node = "vps-a"   # this host's name, unique in the cluster, shown everywhere
lease_s = 5      # the sender lease: how long a silent holder keeps sending rights (monitors/store/lease.py)
node_silent_s = 15  # every other node alerts once when one has not renewed for this long (3 × lease_s; >= 2 ×)
copy_grace_s = 10   # a send in doubt is sent again only if this host's bridge, connected this long, saw no copy
unknown_after_s = 60  # a send in doubt not decided by then is feedback `unknown`: an operator decides
```

A cluster shares one PostgreSQL (`[database] url`): it records each drop once and chooses the one host that
sends each account's feedback. Without `[cluster]`, a host with a url behaves as one host always did.
"""
from __future__ import annotations

import re
from monitors.config import ClusterConfig, DatabaseConfig
from watchdog.shared.config_checks import ConfigChecks

NODE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")  # also part of an application_name (at most 63 bytes)
LEASE_S_RANGE = (1.0, 300.0)


def reader_key(account: str, cluster: ClusterConfig | None) -> str:
    """The drops store's key for how far this host read an account's messages.db (cursors, reported windows):
    in a cluster each host reads its own store, so each has its own cursor; drops and feedback are shared."""
    return account if cluster is None else f"{account}@{cluster.node}"


def read_cluster(reader: ConfigChecks, raw: object, database: DatabaseConfig) -> ClusterConfig | None:
    """The `[cluster]` table checked (None without one); errors name the key (exit 2)."""
    if raw is None:
        return None
    cluster = reader.table(ClusterConfig, raw, "cluster")
    if not NODE_NAME.match(cluster.node):
        raise reader.error("cluster.node", f"expected a short lower-case name (letters, digits, . _ -; at most 32), "
                                           f"got {cluster.node!r}")
    low, high = LEASE_S_RANGE
    if not low <= cluster.lease_s <= high:
        raise reader.error("cluster.lease_s", f"expected {low:g} to {high:g} seconds, got {cluster.lease_s!r}")
    if cluster.node_silent_s and not 2 * cluster.lease_s <= cluster.node_silent_s <= 86400:
        raise reader.error("cluster.node_silent_s", f"expected 2 × lease_s ({2 * cluster.lease_s:g}) to 86400 "
                                                    f"seconds, got {cluster.node_silent_s!r}")
    if not 0.5 <= cluster.copy_grace_s <= 600:
        raise reader.error("cluster.copy_grace_s", f"expected 0.5 to 600 seconds, got {cluster.copy_grace_s!r}")
    if not cluster.copy_grace_s <= cluster.unknown_after_s <= 86400:
        raise reader.error("cluster.unknown_after_s", f"expected copy_grace_s ({cluster.copy_grace_s:g}) to 86400 "
                                                      f"seconds, got {cluster.unknown_after_s!r}")
    if not database.url:
        raise reader.error("cluster", "requires [database] url: the hosts of a cluster share one PostgreSQL, which "
                                      "records each drop once and chooses the host that sends")
    return cluster
