"""The layout's rules, held by the build: the supervisor names no product, products reach it through the base.

Read from the source (every import statement, also those inside functions), not from sys.modules: a lazy
import is still a dependency, and a test that imports the modules would only see the paths it happened to run.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("bridge", "monitors")
# What a product package may use of the supervisor: the shared base, the composition, and the extension
# points it implements (hooks and their answers, console marks and events, recovery lines).
EXTENSION_POINTS = ("watchdog.commands.recoveries", "watchdog.core.hooks", "watchdog.core.probes",
                    "watchdog.control.console.extensions", "watchdog.control.console.timeline",
                    "watchdog.control.console.events")


def imports(path: Path) -> set[str]:
    """Every module `path` imports (the code base uses absolute imports only)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: a relative import"
            base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def modules(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (ROOT / package).rglob("*.py"))


def offending(paths: list[Path], forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    """`file: module` for each import of a forbidden package not covered by `allowed`."""
    def hit(name: str, prefixes: tuple[str, ...]) -> bool:
        return any(name == p or name.startswith(p + ".") for p in prefixes)
    return [f"{path.relative_to(ROOT)}: {name}" for path in paths for name in sorted(imports(path))
            if hit(name, forbidden) and not hit(name, allowed)]


@pytest.mark.parametrize("package", ["watchdog/core", "watchdog/control", "watchdog/shared"])
def test_the_supervisor_names_no_product(package: str) -> None:
    assert offending(modules(package), (*PRODUCT, "watchdog.components", "watchdog.cli")) == []


def test_the_commands_reach_the_product_only_through_the_composition() -> None:
    """The CLI, `check`, `backup`: what a package adds comes from its slice (watchdog/components.py)."""
    assert offending([*modules("watchdog/commands"), ROOT / "watchdog/cli.py"], PRODUCT) == []


def test_the_shared_base_imports_nothing_above_it() -> None:
    assert offending(modules("watchdog/shared"), ("watchdog",), ("watchdog.shared",)) == []


@pytest.mark.parametrize("package", PRODUCT)
def test_products_reach_the_supervisor_only_through_the_base_and_its_extension_points(package: str) -> None:
    allowed = ("watchdog.shared", "watchdog.components", *EXTENSION_POINTS)
    assert offending(modules(package), ("watchdog",), allowed) == []


def test_the_bridge_does_not_depend_on_what_reads_it() -> None:
    """Data flows one way: WhatsApp -> bridge store -> monitors -> bridge send (over HTTP, not imports)."""
    assert offending(modules("bridge"), ("monitors",)) == []


def test_the_rules_see_what_they_claim_to() -> None:
    """The reader itself: an import inside a function counts, and the composition is seen to import products."""
    assert "watchdog.components" in imports(ROOT / "watchdog/commands/check.py")  # inside `findings`
    assert offending([ROOT / "watchdog/components.py"], PRODUCT) != []
