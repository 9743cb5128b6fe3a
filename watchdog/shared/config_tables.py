"""Generic typed tables: a TOML table read into a dataclass by its type hints.

Why by hand: a typo must fail with the key that holds it (`accounts.main.api_port: expected an
integer`), and a schema library would cost every child its import on each restart.
"""
from __future__ import annotations

import functools
import types
import typing
from dataclasses import MISSING, fields
from pathlib import Path

from watchdog.shared.config_model import ConfigError


@functools.cache
def _hints(cls: type) -> dict[str, object]:
    """A table's field types, resolved once per process (string annotations: ~1 ms a table, on every start)."""
    return typing.get_type_hints(cls)


class TableReader:
    """Reads typed tables of one config file; every error names the file and the key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {problem}")

    def as_table(self, value: object, key: str) -> dict:
        if not isinstance(value, dict):
            raise self.error(key, f"expected a table, got {_kind(value)}")
        return value

    def table(self, cls: type, value: object, key: str):
        body = self.as_table(value, key)
        hints = _hints(cls)
        names = {f.name for f in fields(cls)}
        for name in body:
            if name not in names:
                raise self.error(f"{key}.{name}", "unknown key")
        kwargs = {}
        for f in fields(cls):
            if f.name in body:
                kwargs[f.name] = self.value(hints[f.name], body[f.name], f"{key}.{f.name}")
            elif f.default is MISSING and f.default_factory is MISSING:
                raise self.error(f"{key}.{f.name}", "missing required value")
        return cls(**kwargs)

    def value(self, hint: object, value: object, key: str) -> object:
        origin = typing.get_origin(hint)
        if origin is types.UnionType:  # `int | str`: the first type the value fits
            for option in typing.get_args(hint):
                try:
                    return self.value(option, value, key)
                except ConfigError:
                    continue
            expected = " or ".join(_KINDS.get(option, getattr(option, "__name__", "?"))
                                   for option in typing.get_args(hint))
            raise self.error(key, f"expected {expected}, got {_kind(value)}")
        if origin is list:
            (item_hint,) = typing.get_args(hint)
            if not isinstance(value, list):
                raise self.error(key, f"expected an array, got {_kind(value)}")
            return [self.value(item_hint, item, f"{key}[{i}]") for i, item in enumerate(value)]
        if hint is bool:
            if not isinstance(value, bool):
                raise self.error(key, f"expected true or false, got {_kind(value)}")
            return value
        if hint is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.error(key, f"expected an integer, got {_kind(value)}")
            return value
        if hint is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.error(key, f"expected a number, got {_kind(value)}")
            return float(value)
        if hint is str:
            if not isinstance(value, str):
                raise self.error(key, f"expected a string, got {_kind(value)}")
            return value
        if hint is Path:
            if not isinstance(value, str) or not value:
                raise self.error(key, f"expected a path string, got {_kind(value)}")
            return Path(value)
        return self.table(hint, value, key)


_KINDS = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array", dict: "a table"}


def _kind(value: object) -> str:
    return _KINDS.get(type(value), type(value).__name__)
