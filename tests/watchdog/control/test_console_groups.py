"""The console's WhatsApp line of a bridge names a project that follows a group the number is not in."""
from __future__ import annotations

from tests.conftest import GROUP_C
from watchdog.control.console import render


def test_the_connection_line_names_the_group_and_the_project() -> None:
    connection = {"account": "main", "connected": True, "state": "connected", "reason": "", "open_window": None,
                  "outbox_depth": 0, "last_event_age_s": 0.4, "caught_up": True,
                  "not_in_groups": [{"group": GROUP_C, "projects": ["velo-test"]}]}
    line = render._connection(connection)
    assert f'<span class="bad">account main is not in group {GROUP_C} (project velo-test)</span>' in line
    assert "not in group" not in render._connection({**connection, "not_in_groups": []})
