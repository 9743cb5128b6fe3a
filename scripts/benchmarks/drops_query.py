"""`scripts/bench drops-query`: the drops API's queries on 100,000 drops, drops.db and PostgreSQL side by side.

Seeds six projects' worth of drops into drops.db through the store's own
`record()` (a third acknowledged, one in twenty backfilled) and copies the
same rows into PostgreSQL (COPY), then times each listing the
API serves (100 newest; by project; by project and feedback status; rare
backfilled ones; a deep keyset page) and one drop's detail by public id,
in the store, without HTTP. The HTTP layer's target (p99 <= 20 ms for 100
rows of 100,000) includes this plus JSON and aiohttp.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from bridge.schema import format_ts
from monitors.drops_store import DropsDB, NewFeedback, Submission
from monitors.store.sqlite import SqliteBackend
from scripts.benchmarks.drop_latency import percentile

PROJECTS = 6
BATCH = 2000
TARGET_P99_MS = 20.0
T0 = 1_764_000_000.0


def seed(drops: DropsDB, count: int) -> None:
    """`count` drops 30 s apart, round robin over the projects, in batches as a catching-up monitor records them."""
    for start in range(0, count, BATCH):
        per_project: dict[str, list[Submission]] = {}
        for i in range(start, min(start + BATCH, count)):
            when = format_ts(datetime.fromtimestamp(T0 + i * 30, timezone.utc))
            per_project.setdefault(f"p{i % PROJECTS + 1}", []).append(Submission(
                f"DR{1000000 + i}", f"1203630000000000{i % PROJECTS + 1:02d}@g.us", "Project",
                "27710000001@s.whatsapp.net", f"M{i}", when, i % 20 == 0))
        for project, subs in per_project.items():
            drops.record(project, "main", start, subs[::3], ack)  # a third acknowledged: feedback pending
            drops.record(project, "main", start, [s for i, s in enumerate(subs) if i % 3], None)


def ack(sub: Submission) -> NewFeedback:
    return NewFeedback("ack", sub.group_jid, f"{sub.drop_number} received", (sub.submitted_by,), f"k{sub.message_id}")


COPIED = {"drops": "id, public_id, project, drop_number, group_jid, group_name, submitted_by, message_id, "
                    "message_time, detected_at, backfilled, feedback_status, feedback_sent_at",
          "drop_events": "id, drop_id, kind, group_jid, submitted_by, message_id, message_time, detected_at, backfilled",
          "feedback": "id, drop_id, kind, recipient, text, mentions, idempotency_key, status, created_at, sent_at, "
                      "attempts, error, bridge_message_id"}


def copy_into_postgres(source: Path, url: str) -> None:
    """The seeded drops.db's rows into a migrated PostgreSQL store, ids kept, identities moved past them."""
    import sqlite3

    import psycopg
    with sqlite3.connect(source) as lite, psycopg.connect(url) as pg:
        pg.execute("SET search_path TO wa_watchdog")
        for table, columns in COPIED.items():
            with pg.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in lite.execute(f"SELECT {columns} FROM {table}"):
                    copy.write_row([bool(v) if c.strip() == "backfilled" else v
                                    for c, v in zip(columns.split(","), row)])
            pg.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")


def timings(action: Callable[[], object], runs: int) -> tuple[float, float]:
    values = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        values.append((time.perf_counter() - started) * 1000)
    return percentile(values, 50), percentile(values, 99)


def cases(drops: DropsDB) -> dict[str, Callable[[], object]]:
    deep = None
    for _ in range(50):  # page 51 of one project (of a smaller seed: its middle page)
        page = drops.list_drops(project="p3", limit=100, cursor=deep)
        if page.next_cursor is None or len(page.drops) < 100:
            break
        deep = page.next_cursor
    some = drops.list_drops(limit=1).drops[0].public_id
    return {
        "100 newest": lambda: drops.list_drops(limit=100),
        "100 newest of a project": lambda: drops.list_drops(project="p2", limit=100),
        "project + feedback=pending": lambda: drops.list_drops(project="p2", feedback="pending", limit=100),
        "feedback=none (all projects)": lambda: drops.list_drops(feedback="none", limit=100),
        "project + backfilled (1 in 20)": lambda: drops.list_drops(project="p1", backfilled=True, limit=100),
        "project, a deep page (keyset)": lambda: drops.list_drops(project="p3", limit=100, cursor=deep),
        "one drop with history": lambda: drops.drop_by_public_id(some),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench drops-query", description=__doc__.splitlines()[0])
    parser.add_argument("--drops", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args(argv)
    results: dict[str, dict[str, tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="wa-drops-query-") as tmp:
        stores: list[tuple[str, Callable[[], DropsDB]]] = [("drops.db", lambda: DropsDB(SqliteBackend(Path(tmp) / "drops.db")))]
        from tests.pg import PgCluster, find_bin_dir
        bin_dir, why = find_bin_dir()
        cluster = PgCluster(bin_dir, durable=True) if bin_dir else None
        if cluster is None:
            print(f"PostgreSQL skipped: {why}")
        try:
            if cluster is not None:
                cluster.start()
                url = cluster.create_database("query")
                from monitors.store.postgres import PostgresBackend
                stores.append(("PostgreSQL", lambda: DropsDB(PostgresBackend(url))))
            for name, open_store in stores:
                drops = open_store()
                started = time.monotonic()
                if name == "drops.db":
                    seed(drops, args.drops)
                else:
                    drops.drop_count("p1")  # connects and migrates
                    copy_into_postgres(Path(tmp) / "drops.db", url)
                print(f"{name}: {args.drops} drops in {time.monotonic() - started:.0f} s", flush=True)
                with drops.db.transaction() as tx:
                    tx.run("ANALYZE")  # as autovacuum would have by now (SQLite: sqlite_stat1 for the planner)
                results[name] = {case: timings(action, args.runs) for case, action in cases(drops).items()}
                drops.close()
        finally:
            if cluster is not None:
                cluster.destroy()
    names = list(results)
    print(f"\n{args.drops} drops, {PROJECTS} projects, {args.runs} runs each, in the store (no HTTP)\n")
    print("| query | " + " | ".join(f"{n} p50 / p99" for n in names) + " |\n|---|" + "---|" * len(names))
    ok = True
    for case in results[names[0]]:
        cells = []
        for name in names:
            p50, p99 = results[name][case]
            ok &= p99 <= TARGET_P99_MS
            cells.append(f"{p50:.2f} / {p99:.2f} ms")
        print(f"| {case} | " + " | ".join(cells) + " |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
