"""The cluster as `wa-watchdog status` and the console show it (issue 21): the nodes seen and each one's last
renewal, who holds each sender lease, since when, and its token; and the feedback of unknown fate an operator
has to decide (monitors/fate.py). Read from the shared PostgreSQL, judged by its clock; nothing without
`[cluster]`."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from html import escape

from monitors.drops_store import DropsDB, Feedback
from monitors.store.lease import LeaseState, lease_states
from monitors.store.nodes import NodeState, node_states
from monitors.store.postgres import PostgresBackend
from monitors.store.sql import StoreUnavailable
from watchdog.components import Config
from watchdog.shared.component import StatusSection
from watchdog.shared.human import table_lines


@dataclass(frozen=True)
class ClusterView:
    """What the database says now, or why it could not say (`problem`)."""

    node: str  # this host
    silent_after_s: float
    nodes: list[NodeState]
    leases: list[LeaseState]
    problem: str = ""
    covers: dict[str, list[str]] = field(default_factory=dict)  # lease -> the numbers it covers (Config.sending_groups)
    unknown: list[Feedback] = field(default_factory=list)  # feedback of unknown fate: an operator decides

    def unknown_rows(self) -> list[tuple[str, str, str, str]]:
        return [(f.project, f.drop_number, f.text.replace("\n", " ")[:40], f.error) for f in self.unknown]

    def node_rows(self) -> list[tuple[str, str, str, str]]:
        return [(n.node + (" (this host)" if n.node == self.node else ""), n.last_seen, f"{n.seen_ago_s:.1f}s ago",
                 "silent" if n.seen_ago_s >= self.silent_after_s else "seen") for n in self.nodes]

    def lease_rows(self) -> list[tuple[str, str, str, str, str]]:
        return [(self.covering(lease.account), lease.holder, str(lease.token), lease.acquired_at,
                 f"renewed {lease.renewed_ago_s:.1f}s ago" if lease.valid else "expired") for lease in self.leases]

    def covering(self, lease: str) -> str:
        """`first (also backup)`: a lease and the other numbers its holder alone sends through."""
        others = [name for name in self.covers.get(lease, []) if name != lease]
        return f"{lease} (also {', '.join(others)})" if others else lease


def read(config: Config) -> ClusterView | None:
    """The cluster now (None: not a cluster)."""
    cluster = config.cluster
    if cluster is None:
        return None
    db = PostgresBackend(config.database.url, config.database.schema, application_name="wa-watchdog status")
    try:
        return ClusterView(cluster.node, cluster.silent_after_s, node_states(db), lease_states(db),
                           covers=config.sending_groups(), unknown=DropsDB(db).unknown_feedback())
    except StoreUnavailable as exc:
        return ClusterView(cluster.node, cluster.silent_after_s, [], [], f"cannot read the cluster: {exc}")
    finally:
        db.close()


def sections(config: Config) -> list[StatusSection]:
    """`wa-watchdog status`'s cluster section (the drops' `status_sections`)."""
    view = read(config)
    if view is None:
        return []
    lines = [f"cluster (this host: {view.node}; times by PostgreSQL's clock)"]
    if view.problem:
        lines.append(f"  {view.problem}")
    else:
        lines += table_lines(("NODE", "LAST RENEWAL", "AGO", "STATE"), view.node_rows())
        lines += [""] + table_lines(("SENDER LEASE", "HOLDER", "TOKEN", "HELD SINCE", "RENEWAL"), view.lease_rows())
        if view.unknown:
            lines += ["", f"  {len(view.unknown)} feedback of unknown fate: look in the group, then "
                          "`wa-watchdog feedback --project P DROP --mark-sent` (it is there) or `--resend`"]
            lines += table_lines(("PROJECT", "DROP", "FEEDBACK", "WHY"), view.unknown_rows())
    data = {"node": view.node, "problem": view.problem or None, "nodes": [asdict(n) for n in view.nodes],
            "leases": [{**asdict(lease), "covers": view.covers.get(lease.account, [lease.account])}
                       for lease in view.leases],
            "unknown_feedback": [{"project": f.project, "drop_number": f.drop_number, "id": f.id, "text": f.text,
                                  "error": f.error} for f in view.unknown]}
    return [StatusSection("cluster", lines, data)]


def html_table(cls: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """A console table of escaped text."""
    head = "".join(f"<th>{escape(h.lower())}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def panel(view: ClusterView) -> str:
    """The console's cluster panel: the same two tables as `wa-watchdog status`."""
    out = [f'<div class="cluster"><h3>cluster <small>this host: {escape(view.node)}</small></h3>']
    if view.problem:
        out.append(f'<p class="problem">{escape(view.problem)}</p>')
    else:
        out.append(html_table("cluster-nodes", ("node", "last renewal", "ago", "state"), view.node_rows()))
        out.append(html_table("cluster-leases", ("sender lease", "holder", "token", "held since", "renewal"),
                              view.lease_rows()))
        if view.unknown:
            out.append(html_table("cluster-unknown", ("project", "drop", "feedback of unknown fate", "why"),
                                   view.unknown_rows()))
    return "".join(out) + "</div>"
