"""The bridge's items for `wa-watchdog backup`: each account's messages.db (every stored group message and the
outbox), then what its transport keeps (neonize: the session store, the WhatsApp link)."""
from __future__ import annotations

from bridge.transports import kind
from watchdog.shared.component import BackupItem
from watchdog.components import Config


def items(config: Config) -> tuple[list[BackupItem], list[str]]:
    found: list[BackupItem] = []
    notes: list[str] = []
    for account in config.accounts.values():
        found.append(BackupItem(f"messages:{account.name}", account.store, True))
        session, said = kind(account.transport).backup_items(config, account)
        found += session
        notes += said
    return found, notes
