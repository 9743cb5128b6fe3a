"""Fixtures shared by the watchdog's test files."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.watchdog.test_systemd import UserManager, _namespace_problem


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[UserManager]:
    """A real systemd user manager in its own namespace (test_systemd.py, core/test_arbiter.py); skips without one."""
    problem = _namespace_problem()
    if problem:
        pytest.skip(problem)
    user_manager = UserManager(tmp_path / "home")
    yield user_manager
    user_manager.stop()
