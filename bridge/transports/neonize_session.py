"""neonize's session store for an account: made ready (its modes), its linked devices read, the paired device to
resume. Used by the transport (bridge/transports/neonize_transport.py), pairing and `wa-watchdog check`."""
from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from neonize._binder import func_callback_bytes2, gocode
from neonize.proto import Neonize_pb2 as nz
from neonize.utils.log import log_whatsmeow

from bridge.config import AccountConfig
from bridge.transports.neonize_account import session_database
from watchdog.shared import file_modes
from watchdog.shared.config_model import is_postgres_url
from watchdog.shared.exitcodes import EXIT_NEEDS_OPERATOR


class NeedsOperator(Exception):
    """The session cannot be used without a human (not paired): exit with EXIT_NEEDS_OPERATOR, do not restart."""

    exit_code = EXIT_NEEDS_OPERATOR


class SessionStoreError(Exception):
    """neonize's session database cannot be read (a file problem, PostgreSQL down): an operational error."""



def prepare_session(account: AccountConfig) -> str:
    """The session database, its directory made (0700) by the process that will use it.

    The session's keys are the account: an existing file (with its -wal/-shm, perhaps left 0644 by an
    older version) is tightened to 0600; neonize creates new ones under umask 027.
    """
    database = session_database(account)
    if not is_postgres_url(database):
        file_modes.ensure_dir(account.session_dir, file_modes.PRIVATE_DIR)
        file_modes.restrict(*file_modes.sqlite_files(Path(database)), mode=file_modes.PRIVATE_FILE)
    return database


def _device_jid(text: str) -> nz.JID:
    """`27710000000:7@s.whatsapp.net` (whatsmeow_device.jid) as a neonize JID."""
    user_device, _, server = text.partition("@")
    user, _, device = user_device.partition(":")
    return nz.JID(User=user, Device=int(device or 0), Server=server, RawAgent=0, Integrator=0, IsEmpty=False)


def linked_devices(database: str) -> list[nz.JID]:
    """Device JIDs stored in a neonize session database.

    Uses neonize's GetAllDevices export (the same Go code and schema as the
    client) but parses only the JID: ClientFactory.get_all_devices_from_db
    splits each row on commas and breaks on a push name that contains one.
    """
    answer = gocode.GetAllDevices(database.encode(), func_callback_bytes2(log_whatsmeow)).decode()
    if answer.startswith("error: "):
        raise SessionStoreError(f"cannot read the neonize session store {database}: {answer[len('error: '):]}")
    return [_device_jid(row.split(",", 1)[0]) for row in filter(None, answer.split("|\u0001|"))]


def _read_only_devices(database: Path) -> list[nz.JID]:
    """The devices of a SQLite session store, read without writing a byte (GetAllDevices migrates the schema).

    `immutable` when there is no -wal (the file is the whole database, and a WAL-mode read would create
    -wal and -shm); a plain read-only open when a bridge has them open already."""
    wal = database.with_name(database.name + "-wal").exists()
    uri = f"file:{database}?{'mode=ro' if wal else 'immutable=1'}"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as conn:
            rows = conn.execute("SELECT jid FROM whatsmeow_device").fetchall()
    except sqlite3.Error as exc:
        raise SessionStoreError(f"cannot read the neonize session store {database}: {exc}") from None
    return [_device_jid(str(jid)) for (jid,) in rows]


def linked_device(account: AccountConfig, read_only: bool = False) -> nz.JID | None:
    """This account's paired device, or None (a missing SQLite file is not created just to look).

    `read_only` (wa-watchdog check): a SQLite store is read without neonize, so that looking writes nothing."""
    database = session_database(account)
    if not is_postgres_url(database):
        if not Path(database).exists():
            return None
        if read_only:
            return next((jid for jid in _read_only_devices(Path(database)) if jid.User == account.phone), None)
    return next((jid for jid in linked_devices(database) if jid.User == account.phone), None)


def ensure_paired(account: AccountConfig) -> nz.JID:
    """The paired device to resume; raises NeedsOperator naming the fix when there is none."""
    device = linked_device(account)
    if device is None:
        raise NeedsOperator(
            f"account {account.name!r} ({account.phone}) is not paired: the neonize session store "
            f"{session_database(account)} holds no linked device for it; link it with "
            f"`wa-watchdog pair --account {account.name} --phone {account.phone}` (or without --phone for a QR code)")
    return device
