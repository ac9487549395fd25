"""Dotted config paths (`retrieval.temperature`, `model.params.units`): how a search space names
the config fields it searches, and how a trial's values are put into a config mapping."""
from __future__ import annotations

import copy
import dataclasses
import typing
from typing import Any

from tuner import params
from tuner.config import Config


def paths(base: dict | None = None) -> dict[str, Any]:
    """Every leaf path of the schema with its annotation, e.g. {'retrieval.temperature': float};
    given a raw config mapping `base`, also the leaves of its free mapping `model.params`, each
    typed by its value there ({'model.params.units': int}). A mapping is searched by its leaves."""
    out = {}
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            for key, sub in typing.get_type_hints(tp).items():
                if typing.get_origin(sub) is not dict:
                    out[f"{f.name}.{key}"] = sub
        else:
            out[f.name] = tp
    model = base.get("model") if isinstance(base, dict) else None
    out.update(params.leaf_types(model.get("params") if isinstance(model, dict) else None, "model.params"))
    return out


def with_values(data: dict, values: dict[str, Any]) -> dict:
    """A deep copy of a raw config mapping with dotted-path values set."""
    data = copy.deepcopy(data or {})
    for dotted, value in values.items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = value
    return data
