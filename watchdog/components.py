"""The one place the product is composed: the supervisor's own commands, the bridge's slice, the drops' slice.

Plain imports of small modules (watchdog/shared/component.py says why not entry points). The supervision
core (watchdog/core) never imports this module or the packages it names; tests/test_import_graph.py holds it.
"""
from __future__ import annotations

from bridge.component import COMPONENT as BRIDGE
from monitors.component import COMPONENT as DROPS
from watchdog.commands.component import COMPONENT as SUPERVISOR
from watchdog.shared.component import Component

COMPONENTS: tuple[Component, ...] = (SUPERVISOR, BRIDGE, DROPS)
