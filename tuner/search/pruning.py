"""Pruning decisions: a trial's pruner asked under the study lock, its answer recorded.

The answer is recorded with the trial (a metric row named `schema.DECISION`), so every worker on
every machine sees the same rungs and no trial is decided twice at an epoch. The rules
themselves are `tuner.search.pruners`.
"""
from __future__ import annotations

from tuner.errors import TrialLost
from tuner.store import RUNNING, Store, api


def decide(store: Store, pruner, study_id: int, trial_id: int, epoch: int, value: float,
           last: bool = False) -> bool:
    """Whether trial `trial_id` stops after `epoch` (its objective there: `value`). Asked under
    the study lock and recorded, so decisions are taken one at a time across workers and a
    decision once recorded is the answer ever after. `last`: the trial's final epoch, where
    stopping saves nothing (a 9-epoch trial at rung 9 would be PRUNED after training in full):
    it goes on, and its value is recorded at the rung for the trials that reach it later."""
    if not pruner.decides_at(epoch):
        return False
    with api.study_lock(store, study_id, trial_id) as study:
        if study.trial_status != RUNNING:
            raise TrialLost(f"trial row {trial_id} is {study.trial_status}: another worker declared it lost")
        recorded = study.decision(trial_id, epoch)
        if recorded is not None:
            return not recorded
        stop = False if last else pruner.should_stop(study.epoch_view(trial_id, pruner.objective, epoch, value))
        if stop is None:
            return False
        study.record_decision(trial_id, epoch, go_on=not stop)
        return stop
