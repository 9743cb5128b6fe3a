"""The bridge's console view: its WhatsApp line under a bridge's row names a project that follows a group the
number is not in; components without a connection get no line."""
from __future__ import annotations

from pathlib import Path

from bridge.console_view import ConnectionView, connection_line
from tests.conftest import BASE_CONFIG, GROUP_C
from watchdog.components import load_text


def test_the_connection_line_names_the_group_and_the_project() -> None:
    connection = {"account": "main", "connected": True, "state": "connected", "reason": "", "open_window": None,
                  "outbox_depth": 0, "last_event_age_s": 0.4, "caught_up": True,
                  "not_in_groups": [{"group": GROUP_C, "projects": ["velo-test"]}]}
    line = connection_line(connection)
    assert f'<span class="bad">account main is not in group {GROUP_C} (project velo-test)</span>' in line
    assert "not in group" not in connection_line({**connection, "not_in_groups": []})


def test_only_a_component_with_a_connection_gets_a_line(tmp_path: Path) -> None:
    view = ConnectionView(load_text(BASE_CONFIG, tmp_path / "wa.toml"))
    assert view.row({"name": "monitor:x"}) == ""
    assert view.row({"name": "bridge:main", "connection": None}) == '<div class="conn bad">WhatsApp: no health answer</div>'
