"""WhatsApp's own limits on a sender, as the simulator models them (`POST /sim/limits`, `POST /sim/logout`).

What a real number meets, in the order it meets it: above a rate of sends
WhatsApp answers rate-overlimit (429) and keeps the message; a sender that
keeps going gets a temporary ban (a reason code and an expiry; every
connection is refused until it expires); a message to a contact WhatsApp will
not let this number reach is refused with 463; and the phone can log the
linked device out. Kept apart from the servers' state (state.py): these are
per-session rules on top of it, set at run time by tests and demos.
"""
from __future__ import annotations

import collections
import time
from collections.abc import Container
from dataclasses import dataclass, field

from bridge.simulator.state import SimError

TEMP_BAN_CODES = ("SEND_TO_TOO_MANY_PEOPLE", "BLOCKED_BY_USERS", "CREATED_TOO_MANY_GROUPS",
                  "SENT_TOO_MANY_SAME_MESSAGE", "BROADCAST_LIST")  # whatsmeow's TempBanReason names
WINDOW = 60.0  # seconds: `per_minute` counts the sends of the last minute


@dataclass
class Limits:
    """One session's limits; 0 = none."""

    per_minute: int = 0  # accepted sends per minute above which the answer is 429 rate-overlimit
    ban_after: int = 0  # rate-overlimit answers in a row after which the session is temporarily banned
    ban_s: int = 60  # how long a temporary ban lasts
    ban_code: str = TEMP_BAN_CODES[0]
    refuse: frozenset[str] = frozenset()  # recipients refused with 463 (reach-out time-lock)

    def json(self) -> dict:
        return {"per_minute": self.per_minute, "ban_after": self.ban_after, "ban_s": self.ban_s,
                "ban_code": self.ban_code, "refuse": sorted(self.refuse)}


@dataclass
class Standing:
    """How a session stands with WhatsApp: its recent sends, its 429s in a row, a ban, a logout."""

    limits: Limits = field(default_factory=Limits)
    sends: collections.deque[float] = field(default_factory=collections.deque)  # monotonic times
    overlimit: int = 0
    banned_until: float = 0.0  # monotonic
    logged_out: bool = False
    rate_limited: int = 0  # 429 answers, for /sim/sessions


@dataclass(frozen=True)
class Refusal:
    """A send WhatsApp refuses: its error code and text (as whatsmeow words them), and whether it bans."""

    code: int
    error: str
    ban: bool = False


class Gatekeeper:
    def __init__(self) -> None:
        self.standing: dict[str, Standing] = collections.defaultdict(Standing)

    def configure(self, body: object, known: Container[str]) -> Limits:
        """POST /sim/limits {session, per_minute?, ban_after?, ban_s?, ban_code?, refuse?}: replaces the limits."""
        if not isinstance(body, dict):
            raise SimError("body: expected a JSON object {session, per_minute?, ban_after?, ban_s?, ban_code?, refuse?}")
        session = body.get("session")
        if session not in known:
            raise SimError(f"session: unknown session {session!r}")
        unknown = set(body) - {"session", "per_minute", "ban_after", "ban_s", "ban_code", "refuse"}
        if unknown:
            raise SimError(f"{sorted(unknown)[0]}: unknown field")
        numbers = {}
        for name in ("per_minute", "ban_after", "ban_s"):
            value = body.get(name, getattr(Limits, name))
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise SimError(f"{name}: expected a whole number >= 0, got {value!r}")
            numbers[name] = value
        code = body.get("ban_code", TEMP_BAN_CODES[0])
        if code not in TEMP_BAN_CODES:
            raise SimError(f"ban_code: one of {', '.join(TEMP_BAN_CODES)}, got {code!r}")
        refuse = body.get("refuse", [])
        if not isinstance(refuse, list) or not all(isinstance(jid, str) for jid in refuse):
            raise SimError("refuse: expected a list of recipient JIDs")
        standing = self.standing[session]
        standing.limits = Limits(ban_code=code, refuse=frozenset(refuse), **numbers)
        return standing.limits

    def check_send(self, phone: str, recipient: object) -> Refusal | None:
        """Count a new send (not a resend of a known id) against the session's limits; a Refusal if refused."""
        standing = self.standing[phone]
        limits = standing.limits
        if recipient in limits.refuse:
            return Refusal(463, "server returned error 463")
        now = time.monotonic()
        while standing.sends and standing.sends[0] <= now - WINDOW:
            standing.sends.popleft()
        if limits.per_minute and len(standing.sends) >= limits.per_minute:
            standing.overlimit += 1
            standing.rate_limited += 1
            ban = bool(limits.ban_after) and standing.overlimit >= limits.ban_after
            if ban:
                standing.banned_until = now + limits.ban_s
                standing.overlimit = 0
            return Refusal(429, "server returned error 429: rate-overlimit", ban)
        standing.sends.append(now)
        standing.overlimit = 0
        return None

    def ban_left(self, phone: str) -> int:
        """Whole seconds of a temporary ban still to run (0: none)."""
        left = self.standing[phone].banned_until - time.monotonic()
        return max(0, round(left + 0.499)) if left > 0 else 0

    def ban_frame(self, phone: str) -> dict:
        """What WhatsApp tells a banned client (whatsmeow's TemporaryBan event: code and expiry)."""
        return {"type": "temporary_ban", "code": self.standing[phone].limits.ban_code, "expire_s": self.ban_left(phone)}

    def log_out(self, phone: str) -> None:
        self.standing[phone].logged_out = True

    def json(self, phone: str) -> dict:
        standing = self.standing[phone]
        return {"limits": standing.limits.json(), "rate_limited": standing.rate_limited,
                "banned_for_s": self.ban_left(phone), "logged_out": standing.logged_out}
