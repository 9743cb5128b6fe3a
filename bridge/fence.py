"""The outbox's fence: a send made under a cluster's sender lease goes out only while that lease is valid.

A cluster (issue 21) lets one host at a time send an account's feedback, under a lease whose token only grows
(monitors/store/lease.py). The database fences every claim and mark, but not what a bridge already holds in its
outbox: pacing keeps rows queued for tens of seconds, and a host paused past its lease (a frozen VM) would send
them on resuming, after the other host took over. So a monitor's send names its lease and token (the body's
`"fence": {"lease": "main", "token": 12}`), and the holder's lease keeper tells its bridges after each renewal "token N valid
until t" and "lost" when it lost the lease (`POST /api/fence`). `t` is CLOCK_MONOTONIC seconds: the monitor and
its bridge run on one host, that clock is system-wide and runs on while a paused VM is stopped, so a pause
outlives the validity by itself.

A fenced row is sent only while its token is the lease's known one and `time.monotonic()` is before its
validity; a row of an older token (or of a token its keeper said lost) is withdrawn: never sent, while the
monitor's row in PostgreSQL stays for the current holder. A row of a token the bridge has not heard of yet, or
whose validity ran out, waits for the next word. Unfenced sends (one host, whatsapp-mcp's clients) never wait.
What stays unfenced is the instant between the last check and the write to WhatsApp's socket.

A validity lasts only as long as the keeper process that gave it (the word's `keeper`, its pid, watched through a
pidfd on the event loop): when the monitor keeping the lease dies, its lease session is reset with it and the other
host takes over at its next look, without waiting out the lease; this host's bridge, alive, must stop sending under
the token at once, not when the dead keeper's last validity runs out. Several processes of a node keep one grant:
the token stays valid while any of them lives and renewed it.
"""
from __future__ import annotations

import math
import os
import re
import select
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bridge.sending import BadRequest, json_object

MAX_TOKEN = 2**62 - 1
MAX_PID = 2**22  # Linux's pid_max at most
MAX_VALID_S = 3600.0  # a validity further ahead than this is a mistake, not a lease
_LEASE = re.compile(r"^:?[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # an account's name (config_model.NAME), or ':webhooks'
_KEY = re.compile(r"^[\x20-\x7e]*[\x21-\x7e][\x20-\x7e]*$")  # an Idempotency-Key (api.py): printable, not blank


class NotALease(BadRequest):
    """Well formed, but no lease's validity (too far ahead of this host's clock): 422."""

    status = 422


@dataclass(frozen=True)
class SendFence:
    """What a fenced send carries: the lease it was claimed under and the token of that grant."""

    lease: str
    token: int


@dataclass
class _Known:
    token: int
    until: dict[int, float] = field(default_factory=dict)  # keeper pid (0: unnamed) -> monotonic validity it gave
    lost: bool = False


class Keepers:
    """The keeper processes whose words a bridge holds, each watched through a pidfd: readable once the process
    exited (a zombie too; a pidfd names one process, so a reused pid is never mistaken for it). Asked before every
    send, not told by the event loop: a loaded loop must not send under a dead keeper's word one turn late."""

    def __init__(self) -> None:
        self._fds: dict[int, int] = {}

    def watch(self, pid: int) -> bool:
        """Watch `pid` (once); False if it is not alive. Where pidfds are missing (Linux before 5.3) nothing is
        watched: the validity's own deadline bounds it, as before."""
        if pid in self._fds:
            return self.alive(pid)
        try:
            self._fds[pid] = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        except (OSError, AttributeError):
            pass
        return True

    def keep_only(self, pids: set[int]) -> None:
        """Stop watching the keepers no word held refers to any more (a new token, a lost one)."""
        for pid in set(self._fds) - pids:
            os.close(self._fds.pop(pid))

    def alive(self, pid: int) -> bool:
        """Is keeper `pid` alive (0 or unwatched: it is not known to be dead)? A dead one is forgotten."""
        fd = self._fds.get(pid)
        if fd is None:
            return True
        if not select.select([fd], [], [], 0)[0]:
            return True
        del self._fds[pid]
        os.close(fd)
        return False


class Fences:
    """What this bridge knows of each lease: its newest token and until when it may send under it."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self.now = now
        self._known: dict[str, _Known] = {}
        self.keepers = Keepers()

    def renewed(self, lease: str, token: int, valid_until: float, keeper: int = 0) -> bool:
        """`token` of `lease` is valid until `valid_until`, while process `keeper` lives (0: not named: until then).
        Several processes of a node renew one grant: each one's latest word counts while it lives. An older token,
        or one said lost, changes nothing. True if the token is new here."""
        known = self._known.get(lease)
        new = known is None or token > known.token
        if new:
            known = self._known[lease] = _Known(token)
            self._forget_keepers()
        assert known is not None
        if token == known.token and not known.lost and (not keeper or self.keepers.watch(keeper)):
            known.until[keeper] = max(known.until.get(keeper, 0.0), valid_until)
        return new

    def _forget_keepers(self) -> None:
        self.keepers.keep_only({pid for known in self._known.values() for pid in known.until})

    def _valid_until(self, known: _Known) -> float:
        """Until when `known`'s token may send: the latest validity a live keeper gave (a dead one's is void: its
        lease may be another host's by now)."""
        for pid in [pid for pid in known.until if not self.keepers.alive(pid)]:
            del known.until[pid]
        return max(known.until.values(), default=0.0)

    def lost(self, lease: str, token: int) -> bool:
        """`token` of `lease` is no longer the lease's (tokens only grow: it never comes back). True if that is
        news here."""
        known = self._known.get(lease)
        if known is None or token > known.token or (token == known.token and not known.lost):
            self._known[lease] = _Known(token, lost=True)
            self._forget_keepers()
            return True
        return False

    def superseded_up_to(self, lease: str) -> int | None:
        """The newest token of `lease` whose rows are withdrawn (None: none)."""
        known = self._known.get(lease)
        return None if known is None else known.token if known.lost else known.token - 1

    def knows(self, lease: str) -> bool:
        """Has a keeper of `lease` spoken to this bridge (since it started)?"""
        return lease in self._known

    def allows(self, fence: SendFence | None) -> bool:
        """May a row under `fence` be sent now (always, for an unfenced row)?"""
        if fence is None:
            return True
        known = self._known.get(fence.lease)
        return (known is not None and not known.lost and known.token == fence.token
                and self.now() < self._valid_until(known))

    def superseded(self, fence: SendFence | None) -> bool:
        """Is `fence` over for good (a newer token is known, or its own was lost): its rows are withdrawn."""
        if fence is None:
            return False
        known = self._known.get(fence.lease)
        return known is not None and (fence.token < known.token or (fence.token == known.token and known.lost))

    def snapshot(self, lease: str) -> dict:
        """The lease as this bridge knows it (the answer of POST /api/fence)."""
        known = self._known.get(lease)
        if known is None:
            return {"lease": lease, "token": None, "valid_s": 0.0}
        valid = 0.0 if known.lost else max(0.0, self._valid_until(known) - self.now())
        return {"lease": lease, "token": known.token, "valid_s": round(valid, 3)}


def _integer(value: object, low: int, high: int) -> int | None:
    """`value` as an integer in [low, high] (JSON's 3.0 is the integer 3), or None."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return None
    return value


def _token(value: object, name: str) -> int:
    if (token := _integer(value, 1, MAX_TOKEN)) is None:
        raise BadRequest(f"{name} must be a positive integer (a sender lease's token)")
    return token


def _lease(value: object, name: str) -> str:
    if not isinstance(value, str) or not _LEASE.match(value):
        raise BadRequest(f"{name} must be a sender lease's name: an account's name")
    return value.strip()


def take_send_fence(body: object) -> SendFence | None:
    """A send's `"fence": {"lease", "token"}`, taken out of its JSON body (which is then parsed as it always was);
    None: an unfenced send."""
    if not isinstance(body, dict) or "fence" not in body:
        return None
    fence = body.pop("fence")
    if not isinstance(fence, dict):
        raise BadRequest("fence must be an object {\"lease\": an account's name, \"token\": a positive integer}")
    json_object(fence, ("lease", "token"))
    return SendFence(_lease(fence.get("lease"), "fence.lease"), _token(fence.get("token"), "fence.token"))


@dataclass(frozen=True)
class FenceWord:
    """`POST /api/fence`: the lease keeper's word: `token` valid until `valid_until` (while process `keeper`
    lives), or `lost`."""

    fence: SendFence
    valid_until: float | None  # None: lost
    keeper: int = 0  # the keeper's pid (0: not named)


def parse_fence_word(body: object, now: float) -> FenceWord:
    """`{"lease", "token", "valid_until", "keeper"?}` (CLOCK_MONOTONIC seconds; the keeper's pid) or
    `{"lease", "token", "lost": true}`."""
    body = json_object(body, ("lease", "token", "valid_until", "lost", "keeper"))
    fence = SendFence(_lease(body.get("lease"), "lease"), _token(body.get("token"), "token"))
    lost, until, keeper = body.get("lost", False), body.get("valid_until"), _integer(body.get("keeper", 0), 0, MAX_PID)
    if not isinstance(lost, bool):
        raise BadRequest("lost must be true or false")
    if lost == (until is not None):
        raise BadRequest("give either valid_until (the token is valid until then) or lost: true")
    if keeper is None:
        raise BadRequest("keeper must be the lease keeper's process id (a positive integer)")
    if lost:
        return FenceWord(fence, None)
    if isinstance(until, bool) or not isinstance(until, (int, float)) or not math.isfinite(until) or until < 0:
        raise BadRequest("valid_until must be a number: CLOCK_MONOTONIC seconds of this host")
    if until - now > MAX_VALID_S:
        raise NotALease(f"valid_until is more than {MAX_VALID_S:.0f} s ahead of this host's CLOCK_MONOTONIC "
                         f"({now:.1f}): not a lease's validity")
    return FenceWord(fence, float(until), keeper)


MAX_WITHDRAW = 1000


def parse_withdraw(body: object) -> tuple[str, ...]:
    """`POST /api/withdraw {"idempotency_keys": [...]}`: the sends to take back, by the keys they were made with."""
    body = json_object(body, ("idempotency_keys",))
    keys = body.get("idempotency_keys")
    if not isinstance(keys, list) or not keys:
        raise BadRequest("idempotency_keys is required: a list of the Idempotency-Keys of the sends to withdraw")
    if len(keys) > MAX_WITHDRAW:
        raise BadRequest(f"{len(keys)} idempotency_keys; at most {MAX_WITHDRAW}")
    if not all(isinstance(k, str) and len(k) <= 200 and _KEY.match(k) for k in keys):
        raise BadRequest("each idempotency_keys[] must be an Idempotency-Key: printable ASCII, not blank, at most "
                         "200 characters")
    return tuple(dict.fromkeys(k.strip() for k in keys))
