"""Standard Webhooks signatures (https://www.standardwebhooks.com/): what a receiver's published library verifies.

The signed content is `<webhook-id>.<webhook-timestamp>.<body>` with the exact
bytes sent; the key is the base64 part of the `whsec_` secret; the header is
`v1,<base64 HMAC-SHA256>`. Twenty lines of hmac, so no dependency for the sender
(the PyPI `standardwebhooks` package verifies in the tests).
"""
from __future__ import annotations

import base64
import hashlib
import hmac

SECRET_PREFIX = "whsec_"


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret (the config check made sure it decodes)."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    signed = b"%s.%d.%s" % (message_id.encode("utf-8"), timestamp, body)
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")


def headers(key: bytes, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers of one delivery attempt; the id stays the same on every retry (receivers dedupe on it)."""
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(key, message_id, timestamp, body), "content-type": "application/json"}
