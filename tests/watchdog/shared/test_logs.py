"""The one log line format: a standby that takes over renames itself without a new handler, and a name is
written as it is (braces included), never read as a format."""
from __future__ import annotations

import sys

from loguru import logger

from watchdog.shared import logs


def test_a_rename_changes_the_writer_of_the_next_lines_only() -> None:
    lines: list[str] = []
    logs.setup("bridge:main/standby", sink=lines.append)
    try:
        logger.info("waiting for {}", "the session")
        logs.rename("bridge:{main}")
        logger.info("took over")
    finally:  # back to loguru's default handler for the tests that follow
        logger.remove()
        logger.configure(extra={})
        logger.add(sys.stderr)
    assert len(lines) == 2 and all(logs.is_stamped(line) for line in lines)
    assert " bridge:main/standby[" in lines[0] and lines[0].rstrip().endswith("waiting for the session")
    assert " bridge:{main}[" in lines[1] and lines[1].rstrip().endswith("took over")
