"""The generic typed loader: a mapping (parsed YAML) into a checked dataclass, and the checks
that name what is wrong in one line.

A training config (`tuner.config`) and a space's search settings (`tuner.space`) are loaded
through `build`; their own range and consistency checks use `require` and `one_of`. Every
failure is a `ConfigError` whose one-line message names the file, the key and the allowed values.
"""
from __future__ import annotations

import dataclasses
import sys
import types
import typing

from tuner import params
from tuner.errors import ConfigError
from tuner.safe_yaml import quote

INT_RANGE = (-(2**31), 2**31 - 1)  # sizes, counts and steps become int32 shapes and counters
SEED_RANGE = (0, 2**32 - 1)  # what NumPy and TensorFlow accept as a seed
FLOAT_MAX = sys.float_info.max  # finite floats only: inf or NaN in a rate or bound is a typo


def type_name(tp) -> str:
    """An annotation as errors name it: 'int', 'list of int', 'str or null'."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return f"list of {type_name(typing.get_args(tp)[0])}"
    if typing.get_origin(tp) is dict:
        return "mapping"
    return "null" if tp is type(None) else tp.__name__


def coerce(value, tp, where: str):
    """Checks `value` against the annotation `tp`; ints are accepted where floats are."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return coerce(value, arg, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: expected {type_name(tp)}, got {quote(value)}")
    if tp is type(None):
        if value is None:
            return None
    elif origin is list:
        if isinstance(value, list):
            (item_tp,) = typing.get_args(tp)
            return [coerce(v, item_tp, where) for v in value]
    elif origin is dict:
        if isinstance(value, dict):
            return params.plain(value, where)
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not (-FLOAT_MAX <= value <= FLOAT_MAX):  # also NaN; a float() of a huge int would overflow
                raise ConfigError(f"{where}: expected a finite number, got {quote(value)}")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{where}: expected {type_name(tp)}, got {quote(value)}")


def build(cls, data, source: str, prefix: str):
    """The dataclass `cls` from a mapping; unknown keys and wrong types are one-line errors."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'config'}: expected a mapping, got {quote(data)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"{source}: unknown key {quote(path)} (allowed: {', '.join(names)})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = build(tp, value, source, f"{path}.")
        else:
            kwargs[key] = coerce(value, tp, f"{source}: {path}")
            _check_int_range(kwargs[key], source, path)
    return cls(**kwargs)


def _check_int_range(value, source: str, path: str) -> None:
    """Integers (alone or in a list) must fit the int32 shapes and counters they become; a
    `seed` must be a NumPy / TensorFlow seed."""
    seed = path.rpartition(".")[2] == "seed"
    low, high = SEED_RANGE if seed else INT_RANGE
    for v in value if isinstance(value, list) else [value]:
        if isinstance(v, int) and not isinstance(v, bool) and not low <= v <= high:
            allowed = f"{low} to {high}" if seed else f"at most {high}" if v > high else f"at least {low}"
            raise ConfigError(f"{source}: {path}: {quote(v)} is out of range (allowed: {allowed})")


def require(ok: bool, source: str, key: str, message: str):
    """Raises the one-line ConfigError `source: key: message` unless `ok`."""
    if not ok:
        raise ConfigError(f"{source}: {key}: {message}")


def one_of(value, allowed, source, key):
    """Raises a one-line ConfigError listing `allowed` unless `value` is one of them."""
    require(value in allowed, source, key, f"{quote(value)} is not one of {', '.join(allowed)}")
