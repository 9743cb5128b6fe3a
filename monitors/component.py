"""What `monitors` adds to the supervisor (watchdog/shared/component.py): filled in as its parts move here."""
from __future__ import annotations

from monitors.config_checks import SLICE
from watchdog.shared.component import Component

COMPONENT = Component("monitors", config=SLICE)
