"""The composition (watchdog/components.py): each package declares its own slice and every reference in it
resolves; who may import whom is tests/test_import_graph.py."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from watchdog import components
from watchdog.shared.component import resolve

def test_every_command_is_declared_once_and_its_handler_exists() -> None:
    names = [command.name for component in components.COMPONENTS for command in component.commands]
    assert len(names) == len(set(names)), names
    assert list(components.commands()) == names
    for command in components.commands().values():
        assert callable(resolve(command.handler)), command.handler


def test_every_slice_reference_resolves() -> None:
    for component in components.COMPONENTS:
        for reference in (component.programs, component.findings, component.backup_items):
            assert not reference or callable(resolve(reference)), reference
        for view in component.console_views:
            assert isinstance(resolve(view), type), view
    assert all(Path(ROOT, *module.split(".")).with_suffix(".py").is_file() for module in components.preload())


def _is(name: str, *prefixes: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def test_parsing_a_bridge_command_line_loads_no_other_slice() -> None:
    """A bridge restart pays for the slices' declarations only: no monitor, aiohttp or supervision code."""
    code = ("import sys; from watchdog import cli; cli.build_parser().parse_args(['bridge', '--account', 'main']); "
            "print('\\n'.join(sorted(sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    modules = loaded.stdout.split()
    # Every process validates the whole file, so every slice's config modules are loaded; nothing else of them.
    config_modules = ("monitors", "monitors.component", "monitors.alert_rules", "monitors.config",
                      "monitors.config_checks", "monitors.events", "monitors.cluster_config")
    assert [m for m in modules if _is(m, "monitors") and m not in config_modules] == []
    assert [m for m in modules if _is(m, "aiohttp", "watchdog.core", "watchdog.control", "watchdog.commands")
            and m not in ("watchdog.commands", "watchdog.commands.component")] == []
