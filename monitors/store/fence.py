"""The fence of a sender lease (monitors/store/lease.py): what a claim or "sent" mark carries to be refused
after a takeover. Apart from lease.py so that the drops store imports it without psycopg (drops.db installs)."""
from __future__ import annotations

from dataclasses import dataclass

WEBHOOKS = ":webhooks"  # the lease of webhook deliveries (not an account: account names cannot start with ':')

# The lease is this holder's, with this token, and not expired by the database's clock. `?`: account, holder, token.
FENCE = ("EXISTS (SELECT 1 FROM sender_leases WHERE account = ? AND holder = ? AND token = ? "
         "AND expires_at > now())")


class LeaseLost(Exception):
    """A claim or mark was refused: this holder's token is no longer the account's current one."""


@dataclass(frozen=True)
class Fence:
    """A holder's grant of an account's sender lease: `FENCE`'s parameters."""

    account: str
    holder: str
    token: int

    @property
    def params(self) -> tuple[str, str, int]:
        return self.account, self.holder, self.token


def store_session_name(node: str) -> str:
    """The application_name of a cluster node's drops store connections: the sessions a host that takes over the
    node's lease ends (monitors/store/lease.py), with its lease sessions (`wa-watchdog lease <node> <nonce>`)."""
    return f"wa-watchdog {node}"
