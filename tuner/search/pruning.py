"""Pruning (`search.early_terminate`): stop a trial after an epoch when it is already losing.

A pruner reads the study's per-epoch objective from the store and answers one question, "stop
this trial at this epoch?"; `decide` asks it under the study lock and records the answer with
the trial (a metric row named `schema.DECISION`), so every worker on every machine sees the same
rungs and no trial is decided twice at an epoch. The rules follow Optuna's pruners
(`optuna/pruners/_successive_halving.py`, `_median.py`).
"""
from __future__ import annotations

import math
import statistics

from tuner.errors import TrialLost
from tuner.store import Store, api
from tuner.store.schema import COMPLETED, RUNNING


class HyperbandPruner:
    """Asynchronous successive halving (ASHA, W&B's hyperband early_terminate): at the rungs
    min_iter·eta^k a trial goes on only if its value is in the top 1/eta of the values of the
    trials decided at that rung so far, itself included. While fewer than eta trials reached the
    rung, it must be the best of them (Optuna's rule: nothing can be resumed later)."""

    def __init__(self, objective: str, direction: str, min_iter: int = 1, eta: int = 3):
        self.objective, self.maximize, self.min_iter, self.eta = objective, direction == "max", min_iter, eta

    def is_rung(self, epoch: int) -> bool:
        rung = self.min_iter
        while rung < epoch:
            rung *= self.eta
        return rung == epoch

    def should_stop(self, conn, study_id: int, trial_id: int, epoch: int, value: float) -> bool | None:
        if not self.is_rung(epoch):
            return None
        if math.isnan(value):
            return True
        competing = api.values_at(conn, study_id, self.objective, epoch, decided=True, exclude=trial_id) + [value]
        return not promotable(value, competing, self.eta, self.maximize)


def promotable(value: float, competing: list[float], eta: int, maximize: bool) -> bool:
    """Whether `value` is in the top 1/eta of `competing` (which holds it)."""
    keep = max(len(competing) // eta, 1)
    ranked = sorted(competing, reverse=maximize)
    threshold = ranked[keep - 1]
    return value >= threshold if maximize else value <= threshold


class MedianPruner:
    """Optuna's MedianPruner: from epoch `min_iter` on, once `startup_trials` trials completed,
    stop a trial whose best value so far is worse than the median of the completed trials'
    values at the same epoch."""

    def __init__(self, objective: str, direction: str, min_iter: int = 1, startup_trials: int = 5):
        self.objective, self.maximize = objective, direction == "max"
        self.min_iter, self.startup_trials = min_iter, startup_trials

    def should_stop(self, conn, study_id: int, trial_id: int, epoch: int, value: float) -> bool | None:
        if epoch < self.min_iter or api.count_status(conn, study_id, COMPLETED) < max(self.startup_trials, 1):
            return None
        if math.isnan(value):
            return True
        earlier = api.values_at(conn, study_id, self.objective, epoch, status=COMPLETED)
        if not earlier:
            return None
        seen = [v for e, v in api.curve(conn, trial_id, self.objective).items() if e <= epoch and not math.isnan(v)]
        best = (max if self.maximize else min)(seen + [value])
        median = statistics.median(earlier)
        return best < median if self.maximize else best > median


PRUNERS = {"hyperband": HyperbandPruner, "median": MedianPruner}


def pruner_for(early_terminate: dict | None, objective: str, direction: str):
    """The pruner a study's checked `search.early_terminate` asks for; None without one."""
    if not early_terminate:
        return None
    options = {k: v for k, v in early_terminate.items() if k != "type"}
    return PRUNERS[early_terminate["type"]](objective, direction, **options)


def decide(store: Store, pruner, study_id: int, trial_id: int, epoch: int, value: float) -> bool:
    """Whether trial `trial_id` stops after `epoch` (its objective there: `value`). Asked under
    the study lock and recorded, so decisions are taken one at a time across workers and a
    decision once recorded is the answer ever after."""
    with api.study_lock(store, study_id, trial_id) as (conn, row):
        if row.trial_status != RUNNING:
            raise TrialLost(f"trial row {trial_id} is {row.trial_status}: another worker declared it lost")
        recorded = api.decision(conn, trial_id, epoch)
        if recorded is not None:
            return not recorded
        stop = pruner.should_stop(conn, study_id, trial_id, epoch, value)
        if stop is None:
            return False
        api.record_decision(conn, trial_id, epoch, go_on=not stop)
        return stop
