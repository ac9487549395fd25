"""Warm start: what a study knows before its first trial. `search.base_first` runs the space's
own config first; `search.enqueue` runs known configs next (a hand-tuned one, last month's best),
their values read at the space's parameter paths; `search.warm_start` gives TPE the trials of an
earlier study.

All are read when the study is created, checked against the space, and kept in the study's
settings: workers on other machines need neither the files nor the other store. A resume keeps
the base and warm-start trials it was created with, however many the earlier study has gained
since. Anything that does not fit is a one-line ConfigError naming the file or key and the
parameter, raised before a study is created; only a base that does not fit is a note instead
(`study.first_trial`): the author of a space did not ask for it.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import operator
from pathlib import Path
from typing import Sequence

from tuner import config, safe_yaml
from tuner.distributions import encode
from tuner.errors import ConfigError, StoreError
from tuner.search import tpe
from tuner.space import Space
from tuner.store import COMPLETED, PRUNED, RUNNING, Store, get_study, mask_url, open_store, sampler_history


def enqueued_values(space: Space, files: Sequence[str], hyperparameters) -> list[dict]:
    """Each config file's values of the space's active searched parameters, as the oracle hands
    them out. A relative path is relative to the space's folder, as a space's towers file is."""
    folder = Path(space.source).parent
    return [_values_of(space, str(folder / f), hyperparameters) for f in files]


def base_values(space: Space, hyperparameters) -> dict:
    """The values of the space's own config (its sections besides `parameters` and `search`), as
    `search.base_first` runs them; a ConfigError naming the parameter whose value lies outside."""
    return _config_values(space, space.base, space.source, hyperparameters)


def _values_of(space: Space, path: str, hyperparameters) -> dict:
    data = safe_yaml.read(path)  # missing or unreadable: a one-line error naming the file
    if isinstance(data, dict) and "parameters" in data:
        raise ConfigError(f"{path}: a search space, not a training config (search.enqueue takes configs, "
                          "e.g. one written by tuner best)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a training config (expected a mapping of config sections, "
                          f"got {type(data).__name__})")
    return _config_values(space, data, path, hyperparameters)


def _config_values(space: Space, data: dict, path: str, hyperparameters) -> dict:
    full = config.from_dict(data, path).to_dict()
    values: dict = {}
    for p in space.parameters:  # parents first: a child is read only where the config makes it active
        if p.distribution == "constant":
            continue  # the space fixes it; the oracle fills it in
        if p.parent is not None and values.get(p.parent) not in [encode(v) for v in p.parent_values]:
            continue
        try:
            value = functools.reduce(operator.getitem, p.path.split("."), full)
        except (KeyError, TypeError):
            raise ConfigError(f"{path}: {p.path}: missing; the space searches it") from None
        values[p.path] = encode(value)
    tpe.check_fits([tpe.PastTrial(values, RUNNING)], hyperparameters, path)
    return values


def kept_or_read(store: Store, settings: dict, hyperparameters, objective: str, direction: str, study: str) -> dict:
    """The warm start of study `study`: kept from when it was created if it exists and names the
    same earlier study, else read (`warm_start`). The earlier study may have gained trials since;
    reading them again would make the resume look like other settings and refuse it."""
    try:
        kept = get_study(store, study).settings.warm_trials
    except StoreError:  # not created yet
        kept = None
    if kept is not None and (kept["study"], kept["storage"]) == (settings["study"], _storage_url(settings)):
        return kept
    return warm_start(store, settings, hyperparameters, objective, direction, study)


def _storage_url(settings: dict) -> str | None:
    """The earlier study's storage as `warm_start` keeps it (None: this study's own store),
    without opening it: a resume on another machine need not reach it."""
    url = settings.get("storage")
    return None if url is None else mask_url(url)


def warm_start(store: Store, settings: dict, hyperparameters, objective: str, direction: str, study: str) -> dict:
    """`search.warm_start` ({study, storage}) as the study keeps it: the other study's completed
    and pruned trials, checked to fit this space. Refused: a study that does not exist, measures
    another objective, searches other parameters, or has no finished trial."""
    name, url = settings["study"], settings.get("storage")
    where = "search.warm_start.study"
    if url is None and name == study:
        raise ConfigError(f"{where}: '{name}' is this study itself; name an earlier study")
    source = store if url is None else open_store(url, read_only=True)
    try:
        other = get_study(source, name)
        if (other.objective, other.direction) != (objective, direction):
            raise ConfigError(f"{where}: study '{name}' in {source.url} measures {other.objective} "
                              f"({other.direction}), this study {objective} ({direction})")
        _same_parameters(other.settings.hyperparameters, hyperparameters, f"{where}: study '{name}'")
        past = [p for p in tpe.past_trials(sampler_history(source, name)) if p.status in (COMPLETED, PRUNED)]
    finally:
        if source is not store:
            source.close()
    if not past:
        raise ConfigError(f"{where}: study '{name}' in {source.url} has no completed or pruned trial to learn from")
    tpe.check_fits(past, hyperparameters, f"{where}: study '{name}'")
    return {"study": name, "storage": None if url is None else source.url,
            "trials": [dataclasses.asdict(p) for p in past]}


def _same_parameters(other_config: dict, hyperparameters, where: str) -> None:
    import keras_tuner as kt  # loaded already (tpe); from_config changes the config it gets, hence the copy

    theirs = set(tpe.distributions(kt.HyperParameters.from_config(copy.deepcopy(other_config))))
    mine = set(tpe.distributions(hyperparameters))
    if mine != theirs:
        only = sorted(mine - theirs)
        detail = (f"parameter {only[0]!r} is searched here only" if only
                  else f"parameter {sorted(theirs - mine)[0]!r} is searched there only")
        raise ConfigError(f"{where} searches other parameters: {detail}")
