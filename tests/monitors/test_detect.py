"""Drop-number detection: the default pattern, whole words, case, and which messages count."""
from __future__ import annotations

import pytest

from bridge.schema import StoredMessage, Window
from monitors.detect import DropPattern, submissions
from tests.conftest import GROUP_A, GROUP_B
from monitors.config import DEFAULT_DROP_PATTERN

DEFAULT = DropPattern(DEFAULT_DROP_PATTERN)
OWN = frozenset({"27710000000"})


@pytest.mark.parametrize("text, expected", [
    ("DR471349", ["DR471349"]),  # 6 digits: the production drop that was lost at 16:48
    ("DR1734150 done", ["DR1734150"]),  # 7 digits
    ("pole DR12345678 installed", ["DR12345678"]),  # 8 digits
    ("dr1734150 and Dr471349", ["DR1734150", "DR471349"]),  # case-insensitive, normalised to upper case
    ("DR1734150, DR1734150 again", ["DR1734150"]),  # once per message
    ("(DR1734150).", ["DR1734150"]),  # punctuation is a word boundary
    ("DR12345", []),  # 5 digits
    ("DR123456789", []),  # 9 digits: not a prefix match either
    ("XDR1734150", []),  # glued to a word before
    ("DR1734150abc", []),  # glued to a word after
    ("DR1734150_2", []),  # underscore is a word character
    ("DR 1734150", []),
    ("", []),
])
def test_default_pattern(text: str, expected: list[str]) -> None:
    assert DEFAULT.find(text) == expected


def test_custom_pattern_records_the_whole_match() -> None:
    assert DropPattern(r"(?i)\bPOLE-(\d{4})\b").find("pole-1234 up, POLE-99999 not") == ["POLE-1234"]


@pytest.mark.parametrize("text", [
    "DR7123456",
    "DR\uff17\uff11\uff12\uff13\uff14\uff15\uff16",  # full-width digits
    "DR\u0667\u0661\u0662\u0663\u0664\u0665\u0666",  # Arabic-Indic digits
    "DR\u06f7\u06f1\u06f2\u06f3\u06f4\u06f5\u06f6",  # Eastern Arabic-Indic (Persian) digits
    "\uff24\uff32\uff17\uff11\uff12\uff13\uff14\uff15\uff16",  # full-width letters and digits
    "\uff44\uff5271\u0968345\u0c6c done",  # full-width lower case, Devanagari and Telugu digits mixed in
])
def test_one_drop_however_its_digits_are_written(text: str) -> None:
    """The issue's three rows for one drop: `\\d` matches any Unicode digit, so every spelling is folded to ASCII."""
    assert DEFAULT.find(text) == ["DR7123456"]


def test_the_spellings_of_one_drop_in_one_message_are_one_drop() -> None:
    assert DEFAULT.find("DR7123456 = DR\uff17\uff11\uff12\uff13\uff14\uff15\uff16 = "
                        "DR\u0667\u0661\u0662\u0663\u0664\u0665\u0666") == ["DR7123456"]


def test_custom_patterns_see_the_same_normal_form() -> None:
    """An ASCII class like [0-9] matches the other spellings too, and the match is recorded in ASCII."""
    pattern = DropPattern(r"(?i)\bPOLE-[0-9]{4}\b")
    assert pattern.find("\uff50\uff4f\uff4c\uff45\uff0d\uff11\uff12\uff13\uff14 and "
                        "POLE-\u0661\u0662\u0663\u0664") == ["POLE-1234"]
    assert DropPattern(r"\bDR\d{7}\b").find("DR\u0967\u0968\u0969\u096a\u096b\u096c\u096d") == ["DR1234567"]


def test_text_without_a_drop_in_other_scripts_finds_nothing() -> None:
    assert DEFAULT.find("\u0645\u0631\u062d\u0628\u0627 \u0661\u0662\u0663 \u00bd \u00b2 caf\u00e9") == []


def message(rowid: int, text: str, chat: str = GROUP_A, sender: str = "27710000001", source: str = "live",
            timestamp: str = "2026-11-24 08:00:00.000000+00:00", from_me: bool = False) -> StoredMessage:
    return StoredMessage(rowid, f"M{rowid}", chat, "Lawley Fibre", sender, text, timestamp, from_me, None, source)


def window(started: str, ended: str | None) -> Window:
    return Window(1, f"2026-11-24 {started}.000000+00:00", f"2026-11-24 {ended}.000000+00:00" if ended else None,
                  "bridge crash", "done", 0, None)


def test_only_contractor_messages_in_the_project_groups_count() -> None:
    found = submissions([message(1, "DR1000001"), message(2, "DR1000002", chat=GROUP_B),
                         message(3, "@27710000001 DR1000001 received, thank you", sender="27710000000"),
                         message(4, "DR1000004", from_me=True), message(5, "no drop here"),
                         message(6, "DR1000006 dr1000007", sender="27710000003")],
                        DEFAULT, frozenset({GROUP_A}), OWN, [])
    assert [(s.drop_number, s.submitted_by, s.message_id, s.group_jid, s.group_name) for s in found] == [
        ("DR1000001", "27710000001@s.whatsapp.net", "M1", GROUP_A, "Lawley Fibre"),
        ("DR1000006", "27710000003@s.whatsapp.net", "M6", GROUP_A, "Lawley Fibre"),
        ("DR1000007", "27710000003@s.whatsapp.net", "M6", GROUP_A, "Lawley Fibre"),
    ]


def test_backfilled_when_late_or_posted_inside_a_disconnect_window() -> None:
    windows = [window("08:03:10", "08:06:40"), window("09:00:00", None)]
    cases = {
        "live before": ("live", "08:03:09"), "offline": ("offline", "07:00:00"), "history": ("history", "07:00:00"),
        "live in window": ("live", "08:05:00"), "at window start": ("live", "08:03:10"),
        "live after": ("live", "08:06:41"), "in open window": ("live", "09:30:00"),
    }
    msgs = [message(i, f"DR{2000000 + i}", source=source, timestamp=f"2026-11-24 {hms}.000000+00:00")
            for i, (source, hms) in enumerate(cases.values())]
    found = submissions(msgs, DEFAULT, frozenset({GROUP_A}), OWN, windows)
    assert {name: s.backfilled for name, s in zip(cases, found)} == {
        "live before": False, "offline": True, "history": True, "live in window": True, "at window start": True,
        "live after": False, "in open window": True}
