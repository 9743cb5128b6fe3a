"""The neonize transport's KIND (bridge/transports/__init__.py): what the system needs of a neonize account
without loading neonize (which starts a Go runtime): its session_db setting, whether it is paired
(`wa-watchdog check`), its session store to back up. The transport itself: neonize_transport.py.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from bridge.transports import TransportKind
from watchdog.shared.component import FAIL, OK, BackupItem, Finding
from bridge.config import AccountConfig
from watchdog.components import Config
from watchdog.shared.config_model import is_postgres_url
from watchdog.shared.programs import ErrorFactory

DEFAULT_DB = "neonize.db"


def session_database(account: AccountConfig) -> str:
    """neonize's database for the account: a PostgreSQL URL as given, else a SQLite file in the session dir.

    Only names it: `wa-watchdog check` asks too, and a check creates nothing (prepare_session does)."""
    if is_postgres_url(account.session_db):
        return account.session_db
    return str(account.session_dir / (account.session_db or DEFAULT_DB))


def check_account(account: AccountConfig, error: ErrorFactory) -> None:
    """session_db: a file name in session_dir, or a postgresql:// URL (another scheme would be read as a file)."""
    if "://" in account.session_db and not is_postgres_url(account.session_db):
        raise error(f"accounts.{account.name}.session_db",
                    "expected a file name in session_dir or a postgresql://user@host/dbname URL, "
                    f"got {account.session_db.partition('://')[0]}://...")


def session_files(account: AccountConfig) -> list[Path]:
    database = session_database(account)
    return [] if is_postgres_url(database) else [Path(database)]


def paired(config: Config, account: AccountConfig) -> Iterator[Finding]:
    """Is the account linked to its phone? Read from the session store without writing to it."""
    try:
        from bridge.transports.neonize_session import SessionStoreError, linked_device
    except ImportError as exc:
        yield Finding(FAIL, "session", f"{account.name}: neonize is not installed ({exc}): "
                                       "pip install 'wa-watchdog[neonize]'")
        return
    try:
        device = linked_device(account, read_only=True)
    except SessionStoreError as exc:
        yield Finding(FAIL, "session", f"{account.name}: {exc}")
        return
    if device is None:
        yield Finding(FAIL, "session", f"{account.name} ({account.phone}) is not paired: wa-watchdog pair "
                                       f"--account {account.name} --phone {account.phone} --config {config.path}")
    else:
        yield Finding(OK, "session", f"{account.name}: paired as {device.User}:{device.Device}@{device.Server} "
                                     f"({session_database(account)})")


def backup_items(config: Config, account: AccountConfig) -> tuple[list[BackupItem], list[str]]:
    """The session store (the WhatsApp link: with it a new host needs no re-pairing); PostgreSQL: a note."""
    if is_postgres_url(account.session_db):
        return [], [f"session:{account.name} is in PostgreSQL: back it up with pg_dump '{account.session_db}'"]
    return [BackupItem(f"session:{account.name}", Path(session_database(account)), True)], []


KIND = TransportKind("bridge.transports.neonize_transport:NeonizeTransport", check_account=check_account,
                     findings=paired, backup_items=backup_items, session_files=session_files)
