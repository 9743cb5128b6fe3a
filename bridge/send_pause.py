"""Whether this account may send now, and if not why and until when: WhatsApp's own limits, obeyed.

Two causes stop an account's sending. A rate-overlimit answer (429) pauses it for a backoff that doubles
with every further one (FIRST_PAUSE, 2x, ... LONGEST_PAUSE) and resets after a message goes through: the
published guidance is that a number which keeps sending into the limit is the one that gets banned. A
temporary ban (whatsmeow's TemporaryBan: a code and an expiry) holds everything until WhatsApp lifts it.
Durations run on the monotonic clock; the wall-clock expiry is only for people (health, alerts).
"""
from __future__ import annotations

import time
from datetime import datetime, timedelta

from watchdog.shared import clock

FIRST_PAUSE = 30.0  # seconds after the first rate-overlimit
LONGEST_PAUSE = 900.0


class SendPause:
    def __init__(self, first: float = FIRST_PAUSE, longest: float = LONGEST_PAUSE) -> None:
        self.first = first
        self.longest = longest
        self.strikes = 0  # rate-overlimit answers since the last message that went through
        self.rate_limited_total = 0
        self._holds: dict[str, tuple[float, str]] = {}  # "rate" / "ban" -> (monotonic end, reason)

    def remaining(self) -> float:
        """Seconds until sending may resume (0: it may now)."""
        end = max((end for end, _ in self._holds.values()), default=0.0)
        return max(0.0, end - time.monotonic())

    @property
    def reason(self) -> str:
        """Why sending waits now ('' when it does not): the hold that lasts longest."""
        now = time.monotonic()
        live = [(end, why) for end, why in self._holds.values() if end > now]
        return max(live)[1] if live else ""

    def rate_limited(self, reason: str) -> float:
        """WhatsApp answered rate-overlimit: pause for the next backoff step; returns its length."""
        self.strikes += 1
        self.rate_limited_total += 1
        delay = min(self.longest, self.first * 2 ** (self.strikes - 1))
        self._holds["rate"] = (time.monotonic() + delay,
                               f"{reason}; paused {delay:.3g} s (rate-overlimit #{self.strikes} in a row)")
        return delay

    def banned(self, until: datetime | None, reason: str) -> None:
        """A temporary ban: nothing goes out until `until` (unknown: until the transport connects again)."""
        seconds = (until - clock.now()).total_seconds() if until else self.longest
        self._holds["ban"] = (time.monotonic() + max(0.0, seconds), reason)

    def sent(self) -> None:
        """A message went through: the backoff starts over."""
        self.strikes = 0

    def lifted(self) -> None:
        """Connected again after a ban: WhatsApp lets us send (a rate-overlimit pause still runs out)."""
        self._holds.pop("ban", None)

    def snapshot(self) -> dict:
        """`sending` in GET /api/health: paused or not, why, until when (UTC), and the 429s seen."""
        left = self.remaining()
        until = (clock.now() + timedelta(seconds=left)).isoformat(timespec="seconds") if left else None
        return {"paused": bool(left), "reason": self.reason if left else "", "until": until,
                "rate_limited": self.rate_limited_total}
