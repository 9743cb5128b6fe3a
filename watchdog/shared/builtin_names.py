"""The names of the built-in programs, for the config check that a `[[programs]]` entry takes none of them.

The built-ins come from the product's slices, which the shared base must not import; the composition
(watchdog/components.py) hands its generator over here when it is imported, as every entry point does
before it loads a config. Loaded without it (a test of the config alone), no built-in name is reserved.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

_generators: list[Callable[[Any], list]] = []


def use(generate: Callable[[Any], list]) -> None:
    """`generate(config) -> list[Program]`: the built-in programs of a loaded config."""
    _generators[:] = [generate]


def builtin_names(config: Any) -> list[str]:
    return [program.name for generate in _generators for program in generate(config)]
