"""What `bridge` adds to the supervisor (watchdog/shared/component.py): filled in as its parts move here."""
from __future__ import annotations

from bridge.config_checks import SLICE
from watchdog.shared.component import Component

COMPONENT = Component("bridge", config=SLICE)
