"""The composition (watchdog/components.py): each package declares its own slice, and only the composition,
the commands and the products put them together; the core, the control side and the shared base name none."""
from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import ROOT
from watchdog import components
from watchdog.shared.component import resolve

CORE = ("watchdog/core", "watchdog/control", "watchdog/shared")
PRODUCTS = ("bridge", "monitors")
# Left for the other parts of the step: the config registers the product's alert rules (config.py), the bridge
# implements the core's health hooks, the drops view builds the console's timeline marks.
NOT_YET = {("watchdog.shared.config", "bridge.alert_rules"), ("watchdog.shared.config", "monitors.alert_rules"),
           ("bridge.supervision", "watchdog.core.hooks"), ("bridge.supervision", "watchdog.core.probes"),
           ("monitors.console_view", "watchdog.control.console.timeline")}


def _imports(folders: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    """(module, module it imports) for every import statement, at the top or inside a function alike."""
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    yield from ((module, alias.name) for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:  # what is named in it
                    yield from ((module, f"{node.module}.{alias.name}") for alias in node.names)


def _is(name: str, *prefixes: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def _unknown(found: set[tuple[str, str]]) -> set[tuple[str, str]]:
    return {(m, n) for m, n in found if not any(m == module and _is(n, name) for module, name in NOT_YET)}


def test_the_core_the_control_side_and_the_shared_base_import_no_product() -> None:
    found = {(module, name) for module, name in _imports(CORE)
             if _is(name, *PRODUCTS, "watchdog.components", "watchdog.cli")}
    assert _unknown(found) == set()


def test_the_products_import_only_the_shared_base_and_the_composition() -> None:
    found = {(module, name) for module, name in _imports(PRODUCTS)
             if _is(name, "watchdog") and not _is(name, "watchdog.shared", "watchdog.components")}
    assert _unknown(found) == set()


def test_the_cli_check_and_backup_name_no_product_module() -> None:
    for path in ("watchdog/cli.py", "watchdog/commands/check.py", "watchdog/commands/backup.py"):
        tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
        named = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
        named += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        assert [n for n in named if _is(n, *PRODUCTS)] == [], path


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


def test_parsing_a_bridge_command_line_loads_no_other_slice() -> None:
    """A bridge restart pays for the small component modules only: no monitor, aiohttp or supervision code."""
    code = ("import sys; from watchdog import cli; cli.build_parser().parse_args(['bridge', '--account', 'main']); "
            "print('\\n'.join(sorted(sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    modules = loaded.stdout.split()
    assert [m for m in modules if _is(m, "monitors") and m not in ("monitors", "monitors.component",
                                                                     "monitors.alert_rules")] == []
    assert [m for m in modules if _is(m, "aiohttp", "watchdog.core", "watchdog.control", "watchdog.commands")
            and m not in ("watchdog.commands", "watchdog.commands.component")] == []
