"""/metrics of a cluster's leases (issue 21), read at scrape time from PostgreSQL: who holds each, its token
(which grows by one with every change of holder or expiry: the transitions) and how long since its renewal;
and how long since each node of the cluster last renewed its row (monitors/store/nodes.py)."""
from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily

from monitors.store.lease import lease_states
from monitors.store.nodes import node_states
from monitors.store.postgres import PostgresBackend
from monitors.store.sql import StoreUnavailable


class LeaseCollector:
    def __init__(self, db: PostgresBackend) -> None:
        self.db = db

    def collect(self):  # noqa: ANN201 - prometheus_client's collector protocol
        try:
            states = lease_states(self.db)
            nodes = node_states(self.db)
        except StoreUnavailable:
            return  # the store's outage is reported by the drops API's own health
        labels = ["account", "holder"]
        valid = GaugeMetricFamily("wa_watchdog_lease_valid", "1 while the holder's lease has not expired (the "
                                  "database's clock); ':webhooks' is the webhook deliveries' lease", labels=labels)
        token = GaugeMetricFamily("wa_watchdog_lease_token", "The lease's fencing token: grows by one with every "
                                  "grant to another holder or after an expiry", labels=labels)
        age = GaugeMetricFamily("wa_watchdog_lease_renewed_age_seconds", "Seconds since the holder last renewed",
                                labels=labels)
        for state in states:
            valid.add_metric([state.account, state.holder], 1.0 if state.valid else 0.0)
            token.add_metric([state.account, state.holder], state.token)
            age.add_metric([state.account, state.holder], state.renewed_ago_s)
        seen = GaugeMetricFamily("wa_watchdog_cluster_node_seen_age_seconds", "Seconds since the node last "
                                 "renewed its row (the database's clock); past [cluster] node_silent_s it is silent",
                                 labels=["node"])
        for node in nodes:
            seen.add_metric([node.node], node.seen_ago_s)
        yield from (valid, token, age, seen)
