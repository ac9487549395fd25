"""One searched config field: W&B sweep distributions, and their Keras Tuner encoding.

Keras Tuner's HyperParameters hold only int/float/str scalars (a Choice of bools even turns
them into 0/1), so list and bool values travel through it as strings ("64-32", "none",
"true") and are decoded here: the rest of the tool sees only decoded values and Configs.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any

from tuner import config_paths, typed
from tuner.errors import ConfigError
from tuner.safe_yaml import quote

DISTRIBUTIONS = ("categorical", "constant", "uniform", "int_uniform", "q_uniform", "log_uniform_values")
_REQUIRED = {"categorical": ("values",), "constant": ("value",), "uniform": ("min", "max"),
             "int_uniform": ("min", "max"), "log_uniform_values": ("min", "max"), "q_uniform": ("min", "max", "q")}
_EMPTY_LIST = "none"  # the encoding of [] (e.g. "no hidden layers")
PATHS = config_paths.paths()  # every searchable config path with its annotation


def scalar_type(tp):
    """The annotation without its `| None` arm: searched values are never null."""
    args = [a for a in getattr(tp, "__args__", ()) if a is not type(None)]
    return args[0] if type(None) in getattr(tp, "__args__", ()) and len(args) == 1 else tp


def encode(value):
    """A decoded config value as the scalar Keras Tuner stores."""
    if isinstance(value, list):
        return "-".join(str(v) for v in value) if value else _EMPTY_LIST
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def decode(value, tp, where: str):
    """The config value for a Keras Tuner scalar (decoded values pass through unchanged)."""
    tp = scalar_type(tp)
    if getattr(tp, "__origin__", None) is list and isinstance(value, str):
        try:
            value = [] if value == _EMPTY_LIST else [int(v) for v in value.split("-")]
        except ValueError:
            raise ConfigError(f"{where}: {value!r} is not an encoded list such as '64-32' or '{_EMPTY_LIST}'") from None
    elif tp is bool and value in ("true", "false"):
        value = value == "true"
    return typed.coerce(value, tp, where)


@dataclass(frozen=True)
class Param:
    """One searched config field; `values`, `min`, `max`, `q` and `parent_values` are config values."""

    path: str
    distribution: str
    values: tuple = ()  # categorical choices, or the single constant
    min: float | None = None
    max: float | None = None
    q: float | None = None
    parent: str | None = None  # active only while this categorical parameter...
    parent_values: tuple = ()  # ...takes one of these values
    annotation: Any = None  # the field's type; `model.params.*` leaves take theirs from the base config

    @property
    def field_type(self):
        return PATHS[self.path] if self.annotation is None else self.annotation

    def decode(self, value, where: str):
        value = decode(value, self.field_type, where)
        if self.q is not None and isinstance(value, float):
            value = float(f"{value:.12g}")  # min + i*q accumulates float noise
        return value

    def declare(self, hp, default):
        """Registers this parameter on a keras_tuner.HyperParameters (inside any open scope)."""
        d, name = self.distribution, self.path
        if d == "constant":
            return hp.Fixed(name, encode(self.values[0]))
        if d == "categorical":
            encoded = [encode(v) for v in self.values]
            return hp.Choice(name, encoded, default=encode(default) if encode(default) in encoded else None)
        in_range = isinstance(default, (int, float)) and self.min <= default <= self.max
        if scalar_type(self.field_type) is int or d == "int_uniform":
            step = int(self.q) if d == "q_uniform" else None
            return hp.Int(name, int(self.min), int(self.max), step=step,
                          sampling="log" if d == "log_uniform_values" else "linear",
                          default=int(default) if in_range and float(default).is_integer() else None)
        return hp.Float(name, self.min, self.max, step=self.q,
                        sampling="log" if d == "log_uniform_values" else "linear",
                        default=float(default) if in_range else None)


def parse_param(path: str, spec, source: str, base: dict | None = None) -> Param:
    """One parameter of a space; `base`: the space's raw config, whose `model.params` leaves are
    searchable paths typed by their values there."""
    key = f"parameters.{path}"
    paths = config_paths.paths(base)
    if path not in paths:
        close = difflib.get_close_matches(str(path), paths, n=1)
        hint = (f"did you mean '{close[0]}'?" if close else "give it a value under model.params in the space's "
                "config: its type comes from there" if str(path).startswith("model.params.")
                else f"allowed: {', '.join(paths)}")
        raise ConfigError(f"{source}: {key}: not a config key ({hint})")
    typed.require(path != "model.towers", source, key, "cannot be searched: a study records one towers "
                   "function (search its model.params, and choose inside the function)")
    typed.require(not path.startswith("evaluation."), source, key,
                   "evaluation settings cannot be searched (every trial must be measured the same way)")
    typed.require(isinstance(spec, dict), source, key, "expected a mapping such as {values: [...]} or "
                   f"{{distribution: uniform, min: ..., max: ...}}, got {quote(spec)}")
    tp = scalar_type(paths[path])
    dist = spec.get("distribution")
    if dist is None:
        ranged = "min" in spec or "max" in spec
        dist = ("categorical" if "values" in spec else "constant" if "value" in spec
                else ("int_uniform" if tp is int else "uniform") if ranged else None)
        typed.require(dist is not None, source, key, "give values: [...], value: x, or a distribution "
                       f"({', '.join(DISTRIBUTIONS)}) with min and max")
    typed.one_of(dist, DISTRIBUTIONS, source, f"{key}.distribution")
    allowed = ("distribution", *_REQUIRED[dist], "when")
    for k in spec:
        typed.require(k in allowed, source, key, f"unknown key '{k}' for distribution {dist} "
                       f"(allowed: {', '.join(allowed)})")
    for k in _REQUIRED[dist]:
        typed.require(k in spec, source, key, f"distribution {dist} needs '{k}'")

    def coerce(value, tp_, where):
        if value is None:
            raise ConfigError(f"{where}: null cannot be searched; leave the key out of parameters instead")
        return typed.coerce(value, tp_, where)

    if dist in ("categorical", "constant"):
        raw = spec["values"] if dist == "categorical" else [spec["value"]]
        typed.require(isinstance(raw, list) and bool(raw), source, f"{key}.values",
                       f"expected a non-empty list, got {quote(raw)}")
        values = tuple(coerce(v, tp, f"{source}: {key}.{'values' if dist == 'categorical' else 'value'}") for v in raw)
        encoded = [encode(v) for v in values]
        typed.require(len(set(encoded)) == len(encoded), source, f"{key}.values", f"duplicate values in {quote(raw)}")
        return Param(path, dist, values, annotation=paths[path])

    typed.require(tp in (int, float), source, key, f"distribution {dist} does not fit a {typed.type_name(tp)} "
                   "field (use values: [...])")
    typed.require(not (tp is int and dist == "uniform"), source, key, f"{path} is an int field: use int_uniform, "
                   "q_uniform with integer min/max/q, log_uniform_values with integer min/max, or values")
    num = int if tp is int or dist == "int_uniform" else float
    lo, hi = (coerce(spec[k], num, f"{source}: {key}.{k}") for k in ("min", "max"))
    typed.require(lo < hi, source, key, f"min {lo} must be < max {hi}")
    typed.require(dist != "log_uniform_values" or lo > 0, source, key,
                   f"log_uniform_values needs min > 0 (got {lo}); use uniform for ranges touching 0")
    q = None
    if dist == "q_uniform":
        q = coerce(spec["q"], num, f"{source}: {key}.q")
        typed.require(q > 0 and math.isfinite(q), source, f"{key}.q", f"must be > 0 (got {q})")
    return Param(path, dist, min=lo, max=hi, q=q, annotation=paths[path])


