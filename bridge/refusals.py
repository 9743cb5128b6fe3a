"""WhatsApp's answers to a send, as the outbox acts on them: slow the account down, or fail this one message.

whatsmeow reports the server's nack of a message as `server returned error <code>` (ErrServerReturnedError)
and a refused info query as `info query returned <code>: <text>` (IQError, e.g. `429: rate-overlimit` on the
media-connection query before an upload); the simulator answers with the same codes. A rate-overlimit is
the account's problem (every message would get it): the message stays queued and the account pauses. A
refusal for one recipient is that message's problem: it is dead-lettered at once with the reason, because
repeating it never works and only adds to the number's risk.
"""
from __future__ import annotations

import re

from bridge.transport import RateLimited, SendFailed

RATE_OVERLIMIT = 429
# Codes WhatsApp refuses one message with (whatsmeow's issue tracker: #379 403, #944 479, #1074 463).
CONTACT_REFUSALS = {
    403: "forbidden: the recipient blocked this number, or it may not post in this chat",
    406: "not acceptable: the message's content or addressing was rejected",
    463: "refused for this contact: WhatsApp's reach-out time-lock on new contacts, or a missing privacy token",
    479: "refused for this contact",
}
_CODE = re.compile(r"(?:server returned error|info query returned) (\d{3})\b")


def server_code(text: str) -> int | None:
    """The WhatsApp error code in a whatsmeow error text, if it carries one."""
    match = _CODE.search(text)
    return int(match.group(1)) if match else None


def classify(code: int | None, detail: str) -> RateLimited | SendFailed | None:
    """The exception for a refused send: RateLimited (pause, retry) or SendFailed (dead-letter); None if the
    answer is neither (no code, and not a rate limit: the caller decides)."""
    if code == RATE_OVERLIMIT or "rate-overlimit" in detail:
        return RateLimited(f"WhatsApp answered rate-overlimit (429): {detail}")
    if code is None:
        return None
    meaning = CONTACT_REFUSALS.get(code, "refused by WhatsApp")
    return SendFailed(f"WhatsApp refused the message (error {code}: {meaning})")
