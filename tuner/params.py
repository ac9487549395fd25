"""`model.params`: the free mapping a config hands to the user's towers function.

It has no schema of its own, so it holds plain YAML values only (they must survive the config
hash, `best.yaml` and the store's JSON), and a search types each leaf by its value in the
space's base config: `model.params.units: 64` makes `model.params.units` an int parameter.
"""
from __future__ import annotations

import math
from typing import Any

from tuner.errors import ConfigError
from tuner.safe_yaml import quote


def plain(value, where: str):
    """`value` if it is plain: string keys; null, booleans, finite numbers, strings, lists and
    mappings of them. Anything else (a YAML date, NaN) is a one-line ConfigError at `where`."""
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise ConfigError(f"{where}: keys must be strings, got {quote(key)}")
        return {key: plain(v, f"{where}.{key}") for key, v in value.items()}
    if isinstance(value, list):
        return [plain(v, where) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {quote(value)}")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ConfigError(f"{where}: expected null, a boolean, a number, a string, a list or a mapping, "
                      f"got {quote(value)} ({type(value).__name__}; quote dates and times)")


def leaf_types(value, path: str) -> dict[str, Any]:
    """{dotted path: type} of the searchable leaves under `path`: booleans, numbers, strings and
    lists of integers (what a search can encode); nulls and other lists have no type to search."""
    if isinstance(value, dict):
        return {k: v for key, sub in value.items() for k, v in leaf_types(sub, f"{path}.{key}").items()}
    if isinstance(value, list):
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        return {path: list[int]} if ints else {}
    return {path: type(value)} if isinstance(value, (bool, int, float, str)) else {}
