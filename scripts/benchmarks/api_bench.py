"""`scripts/bench api`: GET /api/drops of 100 rows out of 100,000 drops, on the real `wa-watchdog drops-api`.

The store is filled through the store's own `record` (as six monitors would
write it, events included), then the drops-api process is started and asked
over one keep-alive connection: the first page, pages deep in the keyset
walk, a project + time-range filter, and `GET /api/health` as the baseline
of the HTTP stack itself (the ratio shows what the query costs). SQLite, and
PostgreSQL too when its server binaries are here (a throwaway cluster).
Target: p99 <= 20 ms.
"""
from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

from bridge.schema import format_ts
from monitors.drops_store import Submission, open_drops_store
from scripts.benchmarks.drop_latency import percentile
from scripts.benchmarks.system_run import CONTRACTORS, ROOT, group_jid, wait_for
from tests.pg import PgCluster, find_bin_dir
from watchdog.shared import endpoints
from watchdog.components import load

TARGET_P99_MS = 20.0
PROJECTS = 6
BATCH = 5000


def config_text(database: str) -> str:
    projects = "".join(f'[[projects]]\nname = "p{n}"\ngroups = ["{group_jid(n)}"]\n\n' for n in range(1, PROJECTS + 1))
    return (f'data_dir = "data"\n{database}\n[accounts.main]\ntransport = "neonize"\nphone = "27710000000"\n\n'
            f'{projects}[drops_api]\nenabled = true\n')


def fill(config_path: Path, total: int) -> None:
    """`total` drops over the projects, one a second (so message times are distinct and ordered)."""
    drops = open_drops_store(load(config_path))
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    try:
        for start in range(0, total, BATCH):
            by_project: dict[int, list[Submission]] = {}
            for n in range(start, min(total, start + BATCH)):
                project = n % PROJECTS + 1
                moment = format_ts(base + timedelta(seconds=n))
                by_project.setdefault(project, []).append(Submission(
                    f"DR{1000000 + n}", group_jid(project), f"Project {project}", CONTRACTORS[n % len(CONTRACTORS)],
                    f"M{n}", moment, n % 10 == 0))
            for project, subs in by_project.items():
                drops.record(f"p{project}", "main", start + BATCH, subs, None)
    finally:
        drops.close()


class Client:
    """One keep-alive HTTP/1.1 connection, as the web app's server would hold."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)

    def get(self, path: str) -> tuple[float, dict]:
        started = time.perf_counter()
        self.conn.request("GET", path)
        response = self.conn.getresponse()
        body = response.read()
        elapsed = (time.perf_counter() - started) * 1000
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
        return elapsed, json.loads(body)


def measure(url: str, requests: int) -> dict[str, list[float]]:
    client = Client(url)
    for _ in range(50):  # warm-up: connection, caches, the first query plans
        client.get("/api/drops?limit=100")
    timings: dict[str, list[float]] = {"health (baseline)": [], "first page": [], "deep pages": [],
                                       "project + since": []}
    cursor = None
    for i in range(requests):
        timings["health (baseline)"].append(client.get("/api/health")[0])
        timings["first page"].append(client.get("/api/drops?limit=100")[0])
        elapsed, page = client.get("/api/drops?limit=100" + (f"&cursor={cursor}" if cursor else ""))
        timings["deep pages"].append(elapsed)
        cursor = page["next_cursor"]  # walks ~the whole table over the run, then starts again
        since = f"2026-01-0{1 + i % 2}T00:00:00Z"
        timings["project + since"].append(client.get(f"/api/drops?project=p{1 + i % PROJECTS}&since={since}"
                                                     "&limit=100")[0])
    return timings


COPIED = ("public_id, project, drop_number, group_jid, group_name, submitted_by, message_id, message_time, "
          "detected_at, backfilled, feedback_status, feedback_sent_at")


def copy_to_postgres(sqlite_config: Path, pg_config: Path, url: str) -> None:
    """The SQLite store's drops, row for row (the schema is the same shape in both), then VACUUM ANALYZE.

    Recording 100,000 drops one statement at a time over a socket takes minutes; one pipelined
    executemany takes seconds and leaves the same rows.
    """
    import psycopg  # only this benchmark's PostgreSQL half needs it

    config = load(pg_config)
    target = open_drops_store(config)
    try:
        target.drop_count("p1")  # connects, which migrates: the schema exists from here on
    finally:
        target.close()
    source = open_drops_store(load(sqlite_config))
    try:
        rows = source.db.rows(f"SELECT {COPIED} FROM drops ORDER BY id")
    finally:
        source.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"SET search_path TO {config.database.schema}")
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(f"INSERT INTO drops ({COPIED}) VALUES ({', '.join(['%s'] * 12)})",
                            [(*r[:9], bool(r[9]), *r[10:]) for r in rows])
        conn.execute("VACUUM ANALYZE")


def run_backend(workdir: Path, name: str, database: str, total: int, requests: int,
                filled_from: Path | None = None, url: str = "") -> dict[str, list[float]]:
    workdir.mkdir(parents=True)
    config_path = workdir / "wa.toml"
    config_path.write_text(config_text(database), encoding="utf-8")
    started = time.monotonic()
    if filled_from is None:
        fill(config_path, total)
        print(f"{name}: {total:,} drops recorded through the store in {time.monotonic() - started:.0f} s", flush=True)
    else:
        copy_to_postgres(filled_from, config_path, url)
        print(f"{name}: {total:,} drops copied in {time.monotonic() - started:.0f} s", flush=True)
    log = open(workdir / "drops-api.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "watchdog.cli", "drops-api", "--config", str(config_path)],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = wait_for(lambda: endpoints.url(workdir / "data", "drops-api"), 30, "drops-api to publish its URL")
        return measure(url, requests)
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench api", description=__doc__.splitlines()[0])
    parser.add_argument("--drops", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=1000, help="requests per kind (default 1000)")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="wa-api-bench-") as tmp:
        results["SQLite"] = run_backend(Path(tmp) / "sqlite", "SQLite", "", args.drops, args.requests)
        bin_dir, why = find_bin_dir()
        if bin_dir is None:
            print(f"PostgreSQL skipped: {why}")
        else:
            cluster = PgCluster(bin_dir)
            try:
                cluster.start()
                url = cluster.create_database("api_bench")
                results["PostgreSQL"] = run_backend(Path(tmp) / "pg", "PostgreSQL", f'[database]\nurl = "{url}"\n',
                                                    args.drops, args.requests, Path(tmp) / "sqlite/wa.toml", url)
            finally:
                cluster.destroy()
    ok = True
    print(f"\n{args.drops:,} drops, {PROJECTS} projects, {args.requests} requests of each kind, limit=100, "
          "one keep-alive connection\n")
    print("| store | request | p50 | p99 | p99 / health p99 | target p99 | ok |\n|---|---|---|---|---|---|---|")
    for store, timings in results.items():
        base = percentile(timings["health (baseline)"], 99)
        for kind, values in timings.items():
            p50, p99 = percentile(values, 50), percentile(values, 99)
            target = kind != "health (baseline)"
            ok &= not target or p99 <= TARGET_P99_MS
            print(f"| {store} | {kind} | {p50:.2f} ms | {p99:.2f} ms | {p99 / base:.1f}x | "
                  f"{'<= 20 ms' if target else ''} | {('yes' if p99 <= TARGET_P99_MS else 'NO') if target else ''} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
