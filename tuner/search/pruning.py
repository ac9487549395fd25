"""Pruning (`search.early_terminate`): stop a trial after an epoch when it is already losing.

A pruner is a small object that checks its own `early_terminate` keys in `__init__` (its
keyword-only arguments are the keys, their defaults the defaults) and answers one question,
"stop this trial at this epoch?", from a read-only view of the study (`EpochView`: plain
values, not a database, which the store fills in). `trial.decide` asks it under the study lock
and records the answer with the trial (a metric row named `schema.DECISION`), so every worker
on every machine sees the same rungs and no trial is decided twice at an epoch. Nothing here
reads the store: the space checks `early_terminate` keys through this module. The rules follow Optuna's pruners
(`optuna/pruners/_successive_halving.py`, `_median.py`).
"""
from __future__ import annotations

import inspect
import math
import statistics
from dataclasses import dataclass
from typing import Any

from tuner.errors import ConfigError
from tuner.safe_yaml import quote
from tuner.store.schema import COMPLETED

KEY = "search.early_terminate"


@dataclass(frozen=True)
class EpochView:
    """What a pruner reads about a study at one trial's epoch, read under the study lock."""

    epoch: int
    value: float  # the trial's objective at `epoch`
    curve: tuple[float, ...]  # the trial's objective at epochs 1..`epoch`, as reported
    decided: tuple[float, ...]  # the objective at `epoch` of the other trials the pruner decided there
    completed: tuple[float, ...]  # the objective at `epoch` of the completed trials
    counts: dict[str, int]  # trials per status


def _count(value, low: int, where: str, name: str) -> int:
    """`value` if it is an integer >= `low`, else the one-line error naming `where`.`name`."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"{where}.{name}: must be an integer >= {low}, got {quote(value)}")
    return value


class HyperbandPruner:
    """Asynchronous successive halving (ASHA, W&B's hyperband early_terminate): at the rungs
    min_iter·eta^k a trial goes on only if its value is in the top 1/eta of the values of the
    trials decided at that rung so far, itself included. While fewer than eta trials reached the
    rung, it must be the best of them (Optuna's rule: nothing can be resumed later)."""

    def __init__(self, objective: str, direction: str, *, min_iter: int = 1, eta: int = 3, where: str = KEY):
        self.objective, self.maximize = objective, direction == "max"
        self.min_iter, self.eta = _count(min_iter, 1, where, "min_iter"), _count(eta, 2, where, "eta")

    def is_rung(self, epoch: int) -> bool:
        rung = self.min_iter
        while rung < epoch:
            rung *= self.eta
        return rung == epoch

    decides_at = is_rung

    def should_stop(self, view: EpochView) -> bool | None:
        if math.isnan(view.value):
            return True
        return not promotable(view.value, [*view.decided, view.value], self.eta, self.maximize)


def promotable(value: float, competing: list[float], eta: int, maximize: bool) -> bool:
    """Whether `value` is in the top 1/eta of `competing` (which holds it)."""
    keep = max(len(competing) // eta, 1)
    ranked = sorted(competing, reverse=maximize)
    threshold = ranked[keep - 1]
    return value >= threshold if maximize else value <= threshold


class MedianPruner:
    """Optuna's MedianPruner: from epoch `min_iter` on, once `startup_trials` trials completed
    (its n_startup_trials), stop a trial whose best value so far is worse than the median of the
    completed trials' values at the same epoch."""

    def __init__(self, objective: str, direction: str, *, min_iter: int = 1, startup_trials: int = 5,
                 where: str = KEY):
        self.objective, self.maximize = objective, direction == "max"
        self.min_iter = _count(min_iter, 1, where, "min_iter")
        self.startup_trials = _count(startup_trials, 0, where, "startup_trials")

    def decides_at(self, epoch: int) -> bool:
        return epoch >= self.min_iter

    def should_stop(self, view: EpochView) -> bool | None:
        if view.counts.get(COMPLETED, 0) < max(self.startup_trials, 1):
            return None
        if math.isnan(view.value):
            return True
        if not view.completed:
            return None
        best = (max if self.maximize else min)([v for v in view.curve if not math.isnan(v)] + [view.value])
        median = statistics.median(view.completed)
        return best < median if self.maximize else best > median


PRUNERS = {"hyperband": HyperbandPruner, "median": MedianPruner}


def options(kind: str) -> dict[str, Any]:
    """The `early_terminate` keys of pruner `kind` with their defaults: its keyword-only arguments."""
    parameters = inspect.signature(PRUNERS[kind]).parameters.values()
    return {p.name: p.default for p in parameters if p.kind == p.KEYWORD_ONLY and p.name != "where"}


def checked_early_terminate(raw: dict, oracle: str, objective: str, direction: str, where: str = KEY) -> dict:
    """`search.early_terminate` with its type's defaults filled in, checked by building its
    pruner; one-line errors naming `where` (the file and key) for bad keys and values."""
    kind = raw.get("type")
    if kind not in PRUNERS:
        raise ConfigError(f"{where}.type: {quote(kind)} is not one of {', '.join(PRUNERS)}")
    if kind == "hyperband" and oracle == "hyperband":
        raise ConfigError(f"{where}: type hyperband prunes within trials; oracle hyperband already runs brackets "
                          "of its own: use one of them (or early_terminate type median)")
    allowed = options(kind)
    for name in raw:
        if name != "type" and name not in allowed:
            other = next((k for k in PRUNERS if name in options(k)), None)
            hint = f"only used by type {other}" if other else "unknown key"
            raise ConfigError(f"{where}.{name}: {hint} (type {kind} takes: {', '.join(allowed)})")
    chosen = {**allowed, **{k: v for k, v in raw.items() if k != "type"}}
    PRUNERS[kind](objective, direction, where=where, **chosen)
    return {"type": kind, **chosen}


def pruner_for(early_terminate: dict | None, objective: str, direction: str):
    """The pruner a study's checked `search.early_terminate` asks for; None without one."""
    if not early_terminate:
        return None
    chosen = {k: v for k, v in early_terminate.items() if k != "type"}
    return PRUNERS[early_terminate["type"]](objective, direction, **chosen)

