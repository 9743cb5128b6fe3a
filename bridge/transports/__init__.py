"""The WhatsApp transports, registered in one place: name (`[accounts.X] transport`) -> "module:KIND".

Each transport's module holds its `Transport` class (bridge/transport.py is the contract) and a `KIND`
saying what the rest of the system needs of it: the class to start, its config check on an account, its
`wa-watchdog check` finding and its backup items. A new transport is one new module and one line here.
Every config load runs the account's KIND check, so a KIND must be cheap to import: a transport whose
module imports a library (neonize starts a Go runtime, sim.py aiohttp's client) keeps its KIND in a light
module of its own (neonize_account.py beside neonize_transport.py, sim_account.py beside sim.py).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from watchdog.shared.component import OK, BackupItem, Finding, resolve

if TYPE_CHECKING:
    from bridge.transport import Transport
    from bridge.config import AccountConfig
    from watchdog.components import Config
    from watchdog.shared.programs import ErrorFactory

TRANSPORTS: dict[str, str] = {
    "sim": "bridge.transports.sim_account:KIND",
    "neonize": "bridge.transports.neonize_account:KIND",
}
NAMES: tuple[str, ...] = tuple(TRANSPORTS)


def _no_check(account: AccountConfig, error: ErrorFactory) -> None:
    """Nothing of the account's table is this transport's own."""


def _nothing_to_pair(config: Config, account: AccountConfig) -> Iterable[Finding]:
    yield Finding(OK, "session", f"{account.name}: transport {account.transport!r}, nothing to pair")


def _no_session(config: Config, account: AccountConfig) -> tuple[list[BackupItem], list[str]]:
    return [], []


def _no_files(account: AccountConfig) -> list[Path]:
    return []


class TransportKind(NamedTuple):
    """What one transport is besides its class; every callable is given the loaded config's account."""

    transport: str  # "module:Class" of its Transport, imported only by the bridge that runs it
    check_account: Callable[[AccountConfig, ErrorFactory], None] = _no_check  # raises error(key, problem)
    findings: Callable[[Config, AccountConfig], Iterable[Finding]] = _nothing_to_pair  # `wa-watchdog check`
    backup_items: Callable[[Config, AccountConfig], tuple[list[BackupItem], list[str]]] = _no_session
    session_files: Callable[[AccountConfig], list[Path]] = _no_files  # its own files in the session directory
    forkable: bool = False  # its module is among the bridge slice's `preload`: a bridge on it may be forked


def kind(name: str) -> TransportKind:
    """The registered transport `name` (a name the config check let through: one of NAMES)."""
    found: TransportKind = resolve(TRANSPORTS[name])
    return found


def transport_class(name: str) -> type[Transport]:
    """Import the transport's module (the heavy part: a standby does it before waiting)."""
    found: type[Transport] = resolve(kind(name).transport)
    return found
