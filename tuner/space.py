"""Search spaces: a training config plus `parameters:` and `search:`, in W&B sweep syntax.

A space is checked completely when it is loaded, so a typo fails in a second rather than
after an hour of trials. Keras Tuner's HyperParameters hold only int/float/str scalars (a
Choice of bools even turns them into 0/1), so list and bool values travel through it as
strings ("64-32", "none", "true") and are decoded here: the rest of the tool sees only
decoded values and validated Configs.
"""
from __future__ import annotations

import contextlib
import difflib
import functools
import itertools
import math
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from tuner import config
from tuner.config import ConfigError

DISTRIBUTIONS = ("categorical", "constant", "uniform", "int_uniform", "q_uniform", "log_uniform_values")
ORACLES = ("random", "bayesian", "hyperband", "grid")
DIRECTIONS = ("max", "min")
_REQUIRED = {"categorical": ("values",), "constant": ("value",), "uniform": ("min", "max"),
             "int_uniform": ("min", "max"), "log_uniform_values": ("min", "max"), "q_uniform": ("min", "max", "q")}
_EMPTY_LIST = "none"  # the encoding of [] (e.g. "no hidden layers")


@functools.cache
def _paths() -> dict[str, Any]:
    return config.paths()


def _scalar(tp):
    """The annotation without its `| None` arm: searched values are never null."""
    args = [a for a in getattr(tp, "__args__", ()) if a is not type(None)]
    return args[0] if type(None) in getattr(tp, "__args__", ()) and len(args) == 1 else tp


def _is_list(tp) -> bool:
    return getattr(tp, "__origin__", None) is list


def _encode(value):
    """A decoded config value as the scalar Keras Tuner stores."""
    if isinstance(value, list):
        return "-".join(str(v) for v in value) if value else _EMPTY_LIST
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _decode(value, tp, where: str):
    """The config value for a Keras Tuner scalar (decoded values pass through unchanged)."""
    tp = _scalar(tp)
    if _is_list(tp) and isinstance(value, str):
        try:
            value = [] if value == _EMPTY_LIST else [int(v) for v in value.split("-")]
        except ValueError:
            raise ConfigError(f"{where}: {value!r} is not an encoded list such as '64-32' or '{_EMPTY_LIST}'") from None
    elif tp is bool and value in ("true", "false"):
        value = value == "true"
    return config._coerce(value, tp, where)


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

    @property
    def field_type(self):
        return _paths()[self.path]

    def decode(self, value, where: str):
        value = _decode(value, self.field_type, where)
        if self.q is not None and isinstance(value, float):
            value = float(f"{value:.12g}")  # min + i*q accumulates float noise
        return value

    def declare(self, hp, default):
        """Registers this parameter on a keras_tuner.HyperParameters (inside any open scope)."""
        d, name = self.distribution, self.path
        if d == "constant":
            return hp.Fixed(name, _encode(self.values[0]))
        if d == "categorical":
            encoded = [_encode(v) for v in self.values]
            return hp.Choice(name, encoded, default=_encode(default) if _encode(default) in encoded else None)
        in_range = isinstance(default, (int, float)) and self.min <= default <= self.max
        if _scalar(self.field_type) is int or d == "int_uniform":
            step = int(self.q) if d == "q_uniform" else None
            return hp.Int(name, int(self.min), int(self.max), step=step,
                          sampling="log" if d == "log_uniform_values" else "linear",
                          default=int(default) if in_range and float(default).is_integer() else None)
        return hp.Float(name, self.min, self.max, step=self.q,
                        sampling="log" if d == "log_uniform_values" else "linear",
                        default=float(default) if in_range else None)


@dataclass
class SearchSettings:
    oracle: str = "random"
    objective: str = "val_recall@10"
    direction: str = "max"
    max_trials: int = 20
    workers: int = 1
    seed: int = 42  # default: the config's seed
    max_epochs: int = 10  # hyperband; default: training.epochs
    factor: int = 3  # hyperband
    retries: int = 1  # re-queues of a trial whose worker died
    study: str = ""  # default: the file's stem


@dataclass
class Space:
    name: str
    source: str
    base: dict  # the training-config part of the file, as written
    parameters: list[Param]  # parents before their conditional children
    search: SearchSettings

    def _param(self, path: str) -> Param | None:
        return next((p for p in self.parameters if p.path == path), None)

    def is_log(self, path: str) -> bool:
        p = self._param(path)
        return p is not None and p.distribution == "log_uniform_values"

    def _chain(self, p: Param) -> list[tuple[str, tuple]]:
        """(parent, values) conditions from the outermost parent down to `p`'s own."""
        chain = []
        while p.parent is not None:
            chain.insert(0, (p.parent, p.parent_values))
            p = self._param(p.parent)
        return chain

    def hyperparameters(self):
        """A keras_tuner.HyperParameters declaring every parameter, conditionals in their scopes."""
        import keras_tuner  # imports TensorFlow: only when a search actually needs it

        hp = keras_tuner.HyperParameters()
        base = config.from_dict(self.base, self.source).to_dict()
        for p in self.parameters:
            section, _, key = p.path.rpartition(".")
            default = base[section][key] if section else base[key]
            with contextlib.ExitStack() as scopes:
                for parent, values in self._chain(p):
                    scopes.enter_context(hp.conditional_scope(parent, [_encode(v) for v in values]))
                p.declare(hp, default)
        return hp

    def _active(self, values: dict) -> dict[str, Any]:
        """Decoded values of the active parameters (Keras Tuner's own `tuner/...` keys aside)."""
        where = f"{self.source}: trial values"
        unknown = [k for k in values if not k.startswith("tuner/") and self._param(k) is None]
        if unknown:
            names = ", ".join(p.path for p in self.parameters)
            raise ConfigError(f"{where}: unknown parameter {unknown[0]!r} (parameters: {names})")
        active: dict[str, Any] = {}
        for p in self.parameters:
            if p.parent is not None:
                if p.parent not in active or _encode(active[p.parent]) not in [_encode(v) for v in p.parent_values]:
                    continue
            if p.path not in values:
                raise ConfigError(f"{where}: no value for the active parameter {p.path!r}")
            active[p.path] = p.decode(values[p.path], f"{where}: {p.path}")
        return active

    def searched_values(self, values: dict) -> dict[str, Any]:
        """The active non-constant parameters, decoded: what distinguishes one trial from another."""
        return {k: v for k, v in self._active(values).items() if self._param(k).distribution != "constant"}

    def config_dict_for(self, values: dict) -> dict:
        """The base mapping with a trial's values filled in; Hyperband's `tuner/epochs` sets training.epochs."""
        updates = self._active(values)
        if "tuner/epochs" in values:
            updates["training.epochs"] = int(values["tuner/epochs"])
        return config.with_values(self.base, updates)

    def config_for(self, values: dict) -> config.Config:
        return config.from_dict(self.config_dict_for(values), f"{self.source} (trial values)")


# --- loading ---------------------------------------------------------------------------------


def builtin_names() -> list[str]:
    return sorted(Path(f.name).stem for f in _builtin_dir().iterdir() if f.name.endswith(".yaml"))


def _builtin_dir():
    return resources.files("tuner") / "spaces"


def load_space(path_or_name: str) -> Space:
    """A space from a YAML path, or a built-in one by bare name ("temp" or "temp.yaml")."""
    path = Path(path_or_name)
    if not path.is_file():
        stem = path.name.removesuffix(".yaml")
        if path.name != str(path_or_name) or stem not in builtin_names():
            raise ConfigError(f"{path_or_name}: no such file, and not a built-in space "
                              f"(built-in: {', '.join(builtin_names())})")
        with resources.as_file(_builtin_dir() / f"{stem}.yaml") as found:
            return _parse(config.read_yaml(found), found)
    return _parse(config.read_yaml(path), path)


def _parse(data, path: Path) -> Space:
    source = str(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of config sections plus parameters and search, "
                          f"got {type(data).__name__}")
    sections = [f.name for f in fields(config.Config)]
    for key in data:
        if key not in sections + ["parameters", "search"]:
            raise ConfigError(f"{source}: unknown key '{key}' (allowed: {', '.join(sections + ['parameters', 'search'])})")
    base = {k: v for k, v in data.items() if k in sections}
    cfg = config.from_dict(base, source)

    raw_params = data.get("parameters")
    if not isinstance(raw_params, dict) or not raw_params:
        raise ConfigError(f"{source}: parameters: a search space needs a mapping of at least one "
                          f"config path to a distribution, e.g. retrieval.temperature: {{values: [0.05, 0.1]}}")
    params = {path_: _parse_param(path_, spec, source) for path_, spec in raw_params.items()}
    params = _resolve_conditions(params, raw_params, source)
    search = _parse_search(data.get("search"), cfg, params, path, source)
    space = Space(path.stem, source, base, params, search)
    _check_values(space, source)
    return space


def _parse_param(path: str, spec, source: str) -> Param:
    key = f"parameters.{path}"
    if path not in _paths():
        close = difflib.get_close_matches(str(path), _paths(), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(_paths())}"
        raise ConfigError(f"{source}: {key}: not a config key ({hint})")
    if path.startswith("evaluation."):
        raise ConfigError(f"{source}: {key}: evaluation settings cannot be searched "
                          f"(every trial must be measured the same way)")
    if not isinstance(spec, dict):
        raise ConfigError(f"{source}: {key}: expected a mapping such as {{values: [...]}} or "
                          f"{{distribution: uniform, min: ..., max: ...}}, got {spec!r}")
    tp = _scalar(_paths()[path])
    dist = spec.get("distribution")
    if dist is None:
        ranged = "min" in spec or "max" in spec
        dist = ("categorical" if "values" in spec else "constant" if "value" in spec
                else ("int_uniform" if tp is int else "uniform") if ranged else None)
        if dist is None:
            raise ConfigError(f"{source}: {key}: give values: [...], value: x, or a distribution "
                              f"({', '.join(DISTRIBUTIONS)}) with min and max")
    if dist not in DISTRIBUTIONS:
        raise ConfigError(f"{source}: {key}.distribution: {dist!r} is not one of {', '.join(DISTRIBUTIONS)}")
    allowed = ("distribution", *_REQUIRED[dist], "when")
    for k in spec:
        if k not in allowed:
            raise ConfigError(f"{source}: {key}: unknown key '{k}' for distribution {dist} (allowed: {', '.join(allowed)})")
    for k in _REQUIRED[dist]:
        if k not in spec:
            raise ConfigError(f"{source}: {key}: distribution {dist} needs '{k}'")

    def coerce(value, tp_, where):
        if value is None:
            raise ConfigError(f"{where}: null cannot be searched; leave the key out of parameters instead")
        return config._coerce(value, tp_, where)

    if dist in ("categorical", "constant"):
        raw = spec["values"] if dist == "categorical" else [spec["value"]]
        if not isinstance(raw, list) or not raw:
            raise ConfigError(f"{source}: {key}.values: expected a non-empty list, got {raw!r}")
        values = tuple(coerce(v, tp, f"{source}: {key}.{'values' if dist == 'categorical' else 'value'}") for v in raw)
        encoded = [_encode(v) for v in values]
        if len(set(encoded)) != len(encoded):
            raise ConfigError(f"{source}: {key}.values: duplicate values in {raw!r}")
        return Param(path, dist, values)

    if tp not in (int, float):
        raise ConfigError(f"{source}: {key}: distribution {dist} does not fit a {config._type_name(tp)} field "
                          f"(use values: [...])")
    if tp is int and dist == "uniform":
        raise ConfigError(f"{source}: {key}: {path} is an int field: use int_uniform, q_uniform with integer "
                          f"min/max/q, log_uniform_values with integer min/max, or values")
    num = int if tp is int or dist == "int_uniform" else float
    lo, hi = (coerce(spec[k], num, f"{source}: {key}.{k}") for k in ("min", "max"))
    if lo >= hi:
        raise ConfigError(f"{source}: {key}: min {lo} must be < max {hi}")
    if dist == "log_uniform_values" and lo <= 0:
        raise ConfigError(f"{source}: {key}: log_uniform_values needs min > 0 (got {lo}); use uniform for ranges touching 0")
    q = None
    if dist == "q_uniform":
        q = coerce(spec["q"], num, f"{source}: {key}.q")
        if not (q > 0 and math.isfinite(q)):
            raise ConfigError(f"{source}: {key}.q: must be > 0 (got {q})")
    return Param(path, dist, min=lo, max=hi, q=q)


def _resolve_conditions(params: dict[str, Param], raw: dict, source: str) -> list[Param]:
    """Applies `when:` and orders the parameters so that every parent precedes its children."""
    categorical = [p for p, v in params.items() if v.distribution == "categorical"]
    for path, p in list(params.items()):
        when = raw[path].get("when")
        if when is None:
            continue
        key = f"parameters.{path}.when"
        if not isinstance(when, dict) or len(when) != 1:
            raise ConfigError(f"{source}: {key}: expected one parameter and its value(s), e.g. "
                              f"{{negatives.strategy: mns}}, got {when!r}")
        ((parent, allowed),) = when.items()
        if parent not in categorical or parent == path:
            kind = "categorical parameter (values: [...])" if parent in params and parent != path else "parameter"
            raise ConfigError(f"{source}: {key}: '{parent}' is not a {kind} of this space "
                              f"(categorical: {', '.join(c for c in categorical if c != path) or 'none'})")
        choices = params[parent].values
        allowed = allowed if isinstance(allowed, list) else [allowed]
        parent_values = []
        for v in allowed:
            v = config._coerce(v, _scalar(params[parent].field_type), f"{source}: {key}.{parent}")
            if _encode(v) not in [_encode(c) for c in choices]:
                raise ConfigError(f"{source}: {key}.{parent}: {v!r} is not one of its values "
                                  f"({', '.join(repr(c) for c in choices)})")
            parent_values.append(v)
        if not parent_values:
            raise ConfigError(f"{source}: {key}.{parent}: give at least one value")
        params[path] = Param(p.path, p.distribution, p.values, p.min, p.max, p.q, parent, tuple(parent_values))

    ordered: dict[str, Param] = {}

    def visit(path, seen=()):
        if path in seen:
            raise ConfigError(f"{source}: parameters.{path}.when: conditions form a cycle "
                              f"({' -> '.join((*seen, path))})")
        if path not in ordered:
            if params[path].parent is not None:
                visit(params[path].parent, (*seen, path))
            ordered[path] = params[path]

    for path in params:
        visit(path)
    return list(ordered.values())


def _parse_search(raw, cfg: config.Config, params: list[Param], path: Path, source: str) -> SearchSettings:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: search: expected a mapping, got {raw!r}")
    defaults = {"seed": cfg.seed, "max_epochs": cfg.training.epochs, "study": path.stem}
    s = config._build(SearchSettings, {**defaults, **raw}, source, "search.")
    config._one_of(s.oracle, ORACLES, source, "search.oracle")
    config._one_of(s.direction, DIRECTIONS, source, "search.direction")
    objectives = [f"val_{m}@{k}" for m in config.METRICS for k in cfg.evaluation.ks]
    config._one_of(s.objective, objectives, source, "search.objective")
    for key, low in (("max_trials", 1), ("workers", 1), ("retries", 0), ("max_epochs", 1), ("factor", 2)):
        config._require(getattr(s, key) >= low, source, f"search.{key}", f"must be >= {low}")
    config._require(bool(s.study.strip()), source, "search.study", "must be a non-empty name")
    if s.oracle != "hyperband":
        for key in ("max_epochs", "factor"):
            config._require(key not in raw, source, f"search.{key}",
                            f"only used by oracle hyperband (oracle is {s.oracle}); training.epochs sets the epochs")
    else:
        config._require(all(p.path != "training.epochs" for p in params), source, "parameters.training.epochs",
                        "hyperband sets the epochs itself (search.max_epochs); remove it from parameters")
    return s


def _check_values(space: Space, source: str) -> None:
    """Puts every listed value and range end into the base config, under its `when` conditions,
    so that values the config rejects (temperature 0, an unknown optimizer, a CBNS bank smaller
    than the batch) fail now rather than as failed trials."""
    for p in space.parameters:
        candidates = list(p.values) if p.values else [p.min, p.max]
        chain = space._chain(p)
        for combo in itertools.product(*(values for _, values in chain)):
            given = dict(zip((name for name, _ in chain), combo))
            for value in candidates:
                value = _decode(value, p.field_type, f"{source}: parameters.{p.path}")
                cond = "".join(f" (when {k} = {v!r})" for k, v in given.items())
                config.from_dict(config.with_values(space.base, {**given, p.path: value}),
                                 f"{source}: parameters.{p.path} = {value!r}{cond}")


def load_space_text(text: str, name: str) -> Space:
    """A space from YAML text: the copy a study keeps in its store, so a worker joining from
    another machine needs no file. `name` stands in for the file name in errors."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name}: the stored space is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    return _parse(data, Path(name))
