"""Search spaces: a training config plus `parameters:` and `search:`, in W&B sweep syntax.

A space is checked completely when it is loaded, so a typo fails in a second rather than
after an hour of trials; its `search:` is checked once into one `tuner.settings.SearchSettings`. Each
parameter's distribution is `tuner.distributions`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import operator
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

from tuner import config, config_paths, safe_yaml, typed, usercode
from tuner.distributions import Param, decode, encode, parse_param, scalar_type
from tuner.errors import ConfigError
from tuner.settings import HYPERBAND_ONLY, SearchSettings, search_settings

@dataclass
class Space:
    name: str
    source: str  # the file (or study) that errors name
    text: str  # the YAML as written: a study stores it, so workers on other machines need no file
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
            default = functools.reduce(operator.getitem, p.path.split("."), base)  # also model.params.a.b
            with contextlib.ExitStack() as scopes:
                for parent, values in self._chain(p):
                    scopes.enter_context(hp.conditional_scope(parent, [encode(v) for v in values]))
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
                if p.parent not in active or encode(active[p.parent]) not in [encode(v) for v in p.parent_values]:
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
        return config_paths.with_values(self.base, updates)

    def config_for(self, values: dict) -> config.Config:
        return config.from_dict(self.config_dict_for(values), f"{self.source} (trial values)")

    def configs_to_check(self) -> Iterator[tuple[str, dict]]:
        """Every searched value (each listed value, both ends of a range) put into the base mapping
        under every combination of the condition values that activate it, as (where, mapping),
        `where` naming the parameter, the value and the conditions for an error. The one walk of
        parameters x conditions: loading checks each against the schema (`_check_values`) and
        `tuner.memory.check_space` against the machine, so neither can skip a case the other sees."""
        for p in self.parameters:
            chain = self._chain(p)
            for combo in itertools.product(*(values for _, values in chain)):
                given = dict(zip((name for name, _ in chain), combo))
                conditions = "".join(f" (when {k} = {safe_yaml.quote(v)})" for k, v in given.items())
                for value in p.values or (p.min, p.max):
                    value = decode(value, p.field_type, f"{self.source}: parameters.{p.path}")
                    yield (f"{self.source}: parameters.{p.path} = {safe_yaml.quote(value)}{conditions}",
                           config_paths.with_values(self.base, {**given, p.path: value}))


# --- loading ---------------------------------------------------------------------------------


_BUILTIN = resources.files("tuner") / "spaces"  # the one copy; search_spaces/ links here


def builtin_names() -> list[str]:
    return sorted(Path(f.name).stem for f in _BUILTIN.iterdir() if f.name.endswith(".yaml"))


def load_space(path_or_name: str) -> Space:
    """A space from a YAML path, or a built-in one by bare name ("temp" or "temp.yaml")."""
    path = Path(path_or_name)
    if not path.is_file():
        stem = path.name.removesuffix(".yaml")
        if path.name != str(path_or_name) or stem not in builtin_names():
            kind = ("a directory, not a space file" if path.is_dir() else
                    "not a regular file" if path.exists() else "no such file")
            raise ConfigError(f"{path_or_name}: {kind}, and not a built-in space "
                              f"(built-in: {', '.join(builtin_names())})")
        with resources.as_file(_BUILTIN / f"{stem}.yaml") as found:
            return _parse(*usercode.anchor_file(safe_yaml.read(found), found.read_text(), found), found.stem,
                          str(found))
    # a relative model.towers file is relative to the space file: anchored, in the text a study stores too
    return _parse(*usercode.anchor_file(safe_yaml.read(path), path.read_text(), path), path.stem, str(path))


def load_space_text(text: str, name: str) -> Space:
    """A space from YAML text: the copy a study keeps in its store, so a worker joining from
    another machine needs no file. `name` stands in for the file name in errors."""
    data = safe_yaml.parse(text, f"{name}: the stored space")
    return _parse(data, text, Path(name).stem, name)


def _parse(data, text: str, stem: str, source: str) -> Space:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of config sections plus parameters and search, "
                          f"got {type(data).__name__}")
    sections = [f.name for f in fields(config.Config)]
    allowed = sections + ["parameters", "search"]
    for key in data:
        if key not in allowed:
            raise ConfigError(f"{source}: unknown key '{key}' (allowed: {', '.join(allowed)})")
    base = {k: v for k, v in data.items() if k in sections}
    cfg = config.from_dict(base, source)

    raw_params = data.get("parameters")
    if not isinstance(raw_params, dict) or not raw_params:
        raise ConfigError(f"{source}: parameters: a search space needs a mapping of at least one "
                          f"config path to a distribution, e.g. retrieval.temperature: {{values: [0.05, 0.1]}}")
    params = {path_: parse_param(path_, spec, source, base) for path_, spec in raw_params.items()}
    params = _resolve_conditions(params, raw_params, source)
    search = _parse_search(data.get("search"), cfg, params, stem, source)
    space = Space(stem, source, text, base, params, search)
    _check_values(space)
    return space

def _resolve_conditions(params: dict[str, Param], raw: dict, source: str) -> list[Param]:
    """Applies `when:` and orders the parameters so that every parent precedes its children."""
    categorical = [p for p, v in params.items() if v.distribution == "categorical"]
    for path, p in list(params.items()):
        when = raw[path].get("when")
        if when is None:
            continue
        key = f"parameters.{path}.when"
        typed.require(isinstance(when, dict) and len(when) == 1, source, key,
                       f"expected one parameter and its value(s), e.g. {{negatives.strategy: mns}}, got {safe_yaml.quote(when)}")
        ((parent, allowed),) = when.items()
        if parent not in categorical or parent == path:
            kind = "categorical parameter (values: [...])" if parent in params and parent != path else "parameter"
            raise ConfigError(f"{source}: {key}: '{parent}' is not a {kind} of this space "
                              f"(categorical: {', '.join(c for c in categorical if c != path) or 'none'})")
        choices = params[parent].values
        allowed = allowed if isinstance(allowed, list) else [allowed]
        parent_values = []
        for v in allowed:
            v = typed.coerce(v, scalar_type(params[parent].field_type), f"{source}: {key}.{parent}")
            typed.require(encode(v) in [encode(c) for c in choices], source, f"{key}.{parent}",
                           f"{v!r} is not one of its values ({', '.join(repr(c) for c in choices)})")
            parent_values.append(v)
        typed.require(bool(parent_values), source, f"{key}.{parent}", "give at least one value")
        params[path] = dataclasses.replace(p, parent=parent, parent_values=tuple(parent_values))

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


def _parse_search(raw, cfg: config.Config, params: list[Param], stem: str, source: str) -> SearchSettings:
    """The space's `search:`: defaults from its config, objectives among the metrics it evaluates."""
    raw = {} if raw is None else raw
    typed.require(isinstance(raw, dict), source, "search", f"expected a mapping, got {safe_yaml.quote(raw)}")
    defaults = {"seed": cfg.seed, "max_epochs": cfg.training.epochs, "study": stem}
    objectives = [f"val_{m}@{k}" for m in config.METRICS for k in cfg.evaluation.ks]
    s = search_settings({**defaults, **raw}, source, objectives)
    if "study" in raw:  # the default (the file's name) is checked where the study is created
        from tuner.store.names import check_study_name  # the one rule for study names

        check_study_name(s.study, f"{source}: search.study")
    if s.oracle != "hyperband":
        for key in HYPERBAND_ONLY:
            typed.require(key not in raw, source, f"search.{key}",
                            f"only used by oracle hyperband (oracle is {s.oracle}); training.epochs sets the epochs")
    else:
        typed.require(all(p.path != "training.epochs" for p in params), source, "parameters.training.epochs",
                        "hyperband sets the epochs itself (search.max_epochs); remove it from parameters")
    return s


def _check_values(space: Space) -> None:
    """Every listed value and range end in the base config, under its `when` conditions, so that
    values the config rejects (temperature 0, an unknown optimizer, a CBNS bank smaller than the
    batch) fail now rather than as failed trials."""
    for where, data in space.configs_to_check():
        config.from_dict(data, where)

