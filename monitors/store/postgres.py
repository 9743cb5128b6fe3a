"""The drops store in PostgreSQL (`[database] url`), for the web app that reads drops from there.

Imported only when a postgres URL is configured, so no other process pays
for psycopg. One connection per DropsDB, in autocommit between explicit
transactions; the session runs in UTC with `search_path` set to the
configured schema. Timestamps are timestamptz in the database but our text
format in Python (a loader converts), uuid and jsonb come back as text: the
store's callers see the same values from both backends.

PostgreSQL down, restarting or unreachable: every call raises
StoreUnavailable (nothing was committed, or the commit's fate is unknown and
the caller's retry is idempotent); the next call reconnects.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace

import psycopg
from psycopg.abc import Buffer
from psycopg.adapt import Loader
from psycopg.types.string import TextLoader

from monitors.store.outbox import outbox_channel
from monitors.store.schema import migrations
from monitors.store.sql import POSTGRES, StoreUnavailable
from monitors.config import DB_SCHEMA_NAME
from watchdog.shared.migrations import Executor, Migration, migrate

CONNECT_TIMEOUT = 5  # seconds; a black-holed server must not stall a monitor's loop for minutes
MIGRATION_LOCK = 0x77617764  # pg_advisory_xact_lock key: one migrating process per database
# Errors of the connection or the server, not of our SQL: wait and retry.
UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError)


class _StoreTimestamp(Loader):
    """timestamptz text as the session (TimeZone UTC) prints it -> our fixed-width format, without a datetime:
    `2026-11-24 08:03:10.5+00` -> `2026-11-24 08:03:10.500000+00:00` (listing 100 drops converts 300 of them)."""

    def load(self, data: Buffer) -> str:
        text = bytes(data).decode()
        if not text.endswith("+00"):
            raise ValueError(f"timestamptz {text!r} is not in UTC: the session's TimeZone must be UTC")
        seconds, _, fraction = text[:-3].partition(".")
        return f"{seconds}.{fraction.ljust(6, '0')}+00:00"


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


class _PgTx:
    """Statements of one transaction. In a pipeline (transactions are), `run` only queues its statement:
    a transaction waits for the server where it needs an answer (`rows`) and at COMMIT, not per statement."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self.last: list[tuple[str, Sequence[object]]] = []  # `at_commit` statements, run before COMMIT

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        """For statements that return rows (SELECT, RETURNING)."""
        return self.conn.execute(POSTGRES.sql(sql) if params else sql, params or None).fetchall()

    def run(self, sql: str, params: Sequence[object] = ()) -> None:
        self.conn.execute(POSTGRES.sql(sql) if params else sql, params or None)

    def at_commit(self, sql: str, params: Sequence[object] = ()) -> None:
        self.last.append((sql, params))

    def finish(self) -> None:
        """Queue the `at_commit` statements: the pipeline sends them with the COMMIT, in one flight."""
        for sql, params in self.last:
            self.run(sql, params)


class PostgresBackend:
    """One connection in autocommit between transactions; its dialect NOTIFYs the schema's outbox channel."""

    def __init__(self, url: str, schema: str = "wa_watchdog", application_name: str = "wa-watchdog",
                 settings: dict[str, int] | None = None, **options: object) -> None:
        """`application_name`, `options` (libpq parameters, e.g. tcp_user_timeout): the sender lease's own
        session is recognised by its name in pg_stat_activity and must not hang on a silent server. `settings`:
        the server's parameters for this session (SET on connecting, which a pgbouncer passes on, unlike a
        startup `options`), e.g. `silence_bounds`."""
        if not DB_SCHEMA_NAME.match(schema):
            raise ValueError(f"database.schema: {schema!r} is not a plain lower-case SQL name")
        self.url = url
        self.schema = schema
        self.dialect = replace(POSTGRES, event_notify=f"SELECT pg_notify('{outbox_channel(schema)}', '')")
        self.description = f"PostgreSQL {redact(url)} (schema {schema})"
        self.application_name = application_name
        self.options = options
        self.settings = settings or {}
        self._conn: psycopg.Connection | None = None

    # -- connection --------------------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection:
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                                   application_name=self.application_name, **self.options)
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"{self.description}: {reason(exc)}") from None
        for name, loader in (("timestamptz", _StoreTimestamp), ("uuid", TextLoader), ("jsonb", TextLoader)):
            conn.adapters.register_loader(name, loader)
        try:
            conn.execute("SET TIME ZONE 'UTC'; SET DateStyle TO 'ISO'")  # what _StoreTimestamp reads
            for name, value in self.settings.items():
                conn.execute(f"SET {name} = {int(value)}")
            migrate(_PgTarget(conn, self.schema, self.description), migrations(POSTGRES))
            conn.execute(f'SET search_path TO "{self.schema}"')
        except UNAVAILABLE as exc:
            conn.close()
            raise StoreUnavailable(f"{self.description}: {reason(exc)}") from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            self._conn = self._connect()
        return self._conn

    def connect(self) -> None:
        """Connect (and migrate) now; raises StoreUnavailable or SchemaTooNew."""
        self._connection()

    # -- the Backend protocol ----------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[_PgTx]:
        conn = self._connection()
        try:
            with conn.pipeline(), conn.transaction():
                tx = _PgTx(conn)
                yield tx
                tx.finish()
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"{self.description}: {reason(exc)}") from None

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        try:
            return _PgTx(self._connection()).rows(sql, params)
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"{self.description}: {reason(exc)}") from None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def silence_bounds(lease_s: float) -> tuple[dict[str, int], dict[str, object]]:
    """A cluster's sessions give up on a silent peer within about `lease_s`, on both ends: (the server's
    `settings`, the client's libpq `options`) for PostgresBackend.

    The server's side is what matters to the other host: a host cut off from PostgreSQL in the middle of a
    transaction keeps its locks until the server's TCP gives up on it, by default after hours (keepalives after
    2 h idle; about 15 min of retransmissions). With these its backend ends, and its locks with it, about
    `lease_s` after its last packet; a takeover ends it sooner, but not the sessions of a host that holds no lease,
    nor another role's. A paused host's kernel still answers keepalives: its sessions stay until a takeover. The
    client's side lets the cut-off host itself find out as soon, instead of waiting in a read for hours.
    """
    idle = max(1, math.ceil(lease_s / 2))  # seconds without traffic before the first probe; one a second after
    timeout_ms = max(1000, int(lease_s * 1000))  # unacknowledged data (or probes) this long: the peer is gone
    server = {"tcp_keepalives_idle": idle, "tcp_keepalives_interval": 1, "tcp_keepalives_count": idle,
              "tcp_user_timeout": timeout_ms}
    client: dict[str, object] = {"keepalives": 1, "keepalives_idle": idle, "keepalives_interval": 1,
                                 "keepalives_count": idle, "tcp_user_timeout": timeout_ms}
    return server, client


def reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class _PgTarget:
    """Schema versions in `<schema>.schema_versions`; the advisory lock serialises migrating processes."""

    def __init__(self, conn: psycopg.Connection, schema: str, description: str) -> None:
        self.conn = conn
        self.schema = schema
        self.description = description

    @contextmanager
    def locked(self) -> Iterator[Executor]:
        with self.conn.transaction():
            tx = _PgTx(self.conn)
            tx.run(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
            tx.run(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            tx.run(f'SET LOCAL search_path TO "{self.schema}"')
            tx.run("CREATE TABLE IF NOT EXISTS schema_versions (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                   "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
            yield tx

    def version(self, ex: Executor) -> int:
        return ex.rows("SELECT COALESCE(MAX(version), 0) FROM schema_versions")[0][0]

    def set_version(self, ex: Executor, migration: Migration) -> None:
        ex.run("INSERT INTO schema_versions (version, name) VALUES (?, ?)", (migration.version, migration.name))
