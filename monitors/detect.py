"""Drop numbers in stored messages: the project's pattern, its groups, never our own messages.

The default pattern (`DR` + 6-8 digits, case-insensitive, whole word) lives in
`monitors.config.DEFAULT_DROP_PATTERN`; a project may set its own. A
pattern's whole match is the drop number, so capture groups in a custom
pattern do not change what is recorded.

A drop number is one drop however its characters are written: `DR7123456`,
`DR７１２３４５６` (full-width) and `DR٧١٢٣٤٥٦` (Arabic-Indic digits) are the same
drop. The text is matched in normal form (NFKC: full-width letters and digits
become ASCII; then every other Unicode decimal digit becomes its ASCII digit),
so the default pattern, a custom one (`[0-9]` as much as `\\d`) and the stored,
shown and acknowledged number all see one spelling.
"""
from __future__ import annotations

import re
import unicodedata

from bridge.schema import StoredMessage, Window
from bridge.transport import Source
from monitors.drops_store import Submission

LATE_SOURCES = frozenset({Source.OFFLINE.value, Source.HISTORY.value})
NON_ASCII_DIGIT = re.compile(r"(?![0-9])\d")  # a Unicode decimal digit (category Nd) other than 0-9


def normal_form(text: str) -> str:
    """`text` with full-width forms folded (NFKC) and every decimal digit in ASCII; ASCII text is returned as is."""
    if text.isascii():
        return text
    text = unicodedata.normalize("NFKC", text)
    return NON_ASCII_DIGIT.sub(lambda digit: str(unicodedata.decimal(digit.group(0))), text)


class DropPattern:
    def __init__(self, pattern: str) -> None:
        self.regex = re.compile(pattern)

    def find(self, text: str) -> list[str]:
        """Drop numbers in `text`, in normal form and upper case, in order of first appearance, each once."""
        return list(dict.fromkeys(match.group(0).upper() for match in self.regex.finditer(normal_form(text or ""))))


def submissions(messages: list[StoredMessage], pattern: DropPattern, groups: frozenset[str],
                own_numbers: frozenset[str], windows: list[Window]) -> list[Submission]:
    """The drop numbers contractors posted in a project's groups, in store order.

    Our own messages (any of our numbers, or sent by this session) are skipped, so an
    acknowledgement quoting a drop number is never read as a drop. A message is
    backfilled when it reached the store late (offline replay, history) or was posted
    inside a disconnect window.
    """
    found = []
    for msg in messages:
        if msg.chat_jid not in groups or msg.is_from_me or msg.sender in own_numbers:
            continue
        drops = pattern.find(msg.content)
        if not drops:
            continue
        backfilled = msg.source in LATE_SOURCES or any(in_window(msg.timestamp, w) for w in windows)
        sender = msg.sender if "@" in msg.sender else f"{msg.sender}@s.whatsapp.net"
        found.extend(Submission(drop, msg.chat_jid, msg.chat_name or "", sender, msg.id, msg.timestamp, backfilled)
                     for drop in drops)
    return found


def in_window(timestamp: str, window: Window) -> bool:
    """Store timestamps are fixed-width text, so text order is time order; an open window has no end yet."""
    return window.started_at <= timestamp and (window.ended_at is None or timestamp <= window.ended_at)
