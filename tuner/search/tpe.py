"""Optuna's TPE as a study's oracle (`search.oracle: tpe`): a Keras Tuner oracle whose next values
come from `optuna.samplers.TPESampler`, so it lives in the store like every other oracle.

The store stays the only database. At every ask an in-memory Optuna study is rebuilt from what
the store holds, read under the study lock: an earlier study's trials (`search.warm_start`), then
this study's trials: completed ones with their objective, pruned ones with the last validation
value they reached at the epoch their pruner stopped them (Optuna ranks pruned trials below
completed ones, those stopped later first), and running ones as RUNNING, so that the constant
liar steers each worker away from what the others are training. The same history gives the same
point on every worker and after a resume; nothing of Optuna's is kept between asks.

Conditional parameters (`when:`, Keras Tuner's conditional scopes) are asked define-by-run: a
parameter is suggested only when its parents' values make it active, and `group=True` lets
multivariate TPE model each set of parameters that occur together.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

import tuner  # noqa: F401  (sets TF_USE_LEGACY_KERAS before keras_tuner imports TensorFlow)
import keras_tuner as kt
from keras_tuner.engine.hyperparameters import Boolean, Choice, Fixed, Float, Int

from tuner.errors import ConfigError
from tuner.store.schema import COMPLETED, PRUNED, RUNNING

optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created in memory" at every ask

_STATES = {COMPLETED: TrialState.COMPLETE, PRUNED: TrialState.PRUNED, RUNNING: TrialState.RUNNING}


def startup_trials(max_trials: int) -> int:
    """Random trials before TPE models the results: a fifth of the budget, 5 to 10. Optuna's
    default is 10 whatever the budget, which would spend half of a 20-trial study on random
    search; below 5, the 'good' tenth of the trials that TPE's first density is fitted to is a
    single trial. Warm-start trials count towards it."""
    return min(10, max(5, max_trials // 5))


@dataclass(frozen=True)
class PastTrial:
    """One trial as the sampler learns from it."""

    values: dict  # Keras Tuner values of the active parameters (lists and bools encoded)
    status: str  # COMPLETED | PRUNED | RUNNING
    value: float | None = None  # the objective; of a pruned trial, its last epoch's
    epoch: int | None = None  # a pruned trial: the epoch after which it was stopped


def past_trials(rows: Iterable[tuple[dict, str, float | None, int | None]]) -> list[PastTrial]:
    """The sampler's history from the store's rows (`LockedStudy.sampler_history`): Keras Tuner's own
    `tuner/...` keys left out, failed and interrupted trials skipped (they measured nothing). A
    pruned trial whose last value was NaN keeps None: Optuna ranks it last, and a study's settings
    (which keep warm-start trials) stay equal to themselves."""
    return [PastTrial({k: v for k, v in values.items() if not k.startswith("tuner/")}, status,
                      value if value is not None and math.isfinite(value) else None, epoch)
            for values, status, value, epoch in rows if status in _STATES]


def distribution(hp) -> BaseDistribution | None:
    """The Optuna distribution of a Keras Tuner hyperparameter; None for a Fixed one (not searched)."""
    if isinstance(hp, Fixed):
        return None
    if isinstance(hp, Boolean):
        return CategoricalDistribution([False, True])
    if isinstance(hp, Choice):  # list and bool values arrive encoded as strings (tuner.distributions)
        return CategoricalDistribution(list(hp.values))
    if isinstance(hp, (Int, Float)):
        log = hp.sampling != "linear"
        if hp.sampling == "reverse_log" or (log and hp.step is not None):
            raise ConfigError(f"parameter {hp.name!r}: search.oracle tpe samples linear or log ranges, "
                              f"not sampling {hp.sampling} with step {hp.step}")
        low, high, step = hp.min_value, hp.max_value, hp.step
        if step is not None:  # Keras Tuner samples low + k·step <= high; Optuna wants high on that grid
            high = low + math.floor((high - low) / step + 1e-9) * step
        if isinstance(hp, Int):
            return IntDistribution(int(low), int(high), log=log, step=int(step or 1))
        return FloatDistribution(float(low), float(high), log=log, step=None if step is None else float(step))
    raise ConfigError(f"parameter {hp.name!r}: search.oracle tpe cannot sample a {type(hp).__name__} hyperparameter")


def distributions(space: kt.HyperParameters) -> dict[str, BaseDistribution]:
    """Every searched (non-Fixed) parameter's distribution, by name."""
    return {hp.name: d for hp in space.space if (d := distribution(hp)) is not None}


def frozen_trial(past: PastTrial, dists: dict[str, BaseDistribution]) -> FrozenTrial:
    """A past trial as Optuna's record; ValueError when a value is outside its distribution."""
    params = {k: v for k, v in past.values.items() if k in dists}
    state = _STATES[past.status]
    value = past.value if state == TrialState.COMPLETE else None
    steps = {past.epoch or 0: past.value} if state == TrialState.PRUNED and past.value is not None else None
    return create_trial(state=state, value=value, params=params, distributions={k: dists[k] for k in params},
                        intermediate_values=steps)


def check_fits(past: Sequence[PastTrial], space: kt.HyperParameters, where: str) -> None:
    """One-line ConfigError naming the parameter when a past trial's values (an earlier study's)
    do not fit `space`: an unknown parameter, or a value outside its distribution."""
    dists = distributions(space)
    fixed = {hp.name for hp in space.space if isinstance(hp, Fixed)}  # not searched: any value is ignored
    for trial in past:
        for name, value in trial.values.items():
            if name in fixed:
                continue
            if name not in dists:
                raise ConfigError(f"{where}: parameter {name!r} is not searched by this space "
                                  f"(searched: {', '.join(dists)})")
            try:
                create_trial(state=TrialState.RUNNING, params={name: value}, distributions={name: dists[name]})
            except ValueError:
                raise ConfigError(f"{where}: parameter {name!r}: {value!r} is outside this space's "
                                  f"{describe(dists[name])}") from None


def describe(dist: BaseDistribution) -> str:
    if isinstance(dist, CategoricalDistribution):
        return "values " + ", ".join(repr(c) for c in dist.choices)
    step = f" step {dist.step}" if dist.step not in (None, 1) else ""
    return f"range {dist.low} to {dist.high}{' (log)' if dist.log else ''}{step}"


def suggest(space: kt.HyperParameters, past: Sequence[PastTrial], *, maximize: bool, startup: int,
            seed: int) -> dict:
    """TPE's next values for `space` given the past trials: the active parameters only."""
    dists = distributions(space)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # group=True, at every ask
        sampler = optuna.samplers.TPESampler(multivariate=True, group=True, constant_liar=True, seed=seed,
                                             n_startup_trials=startup)
        study = optuna.create_study(direction="maximize" if maximize else "minimize", sampler=sampler)
        study.add_trials(frozen_trial(p, dists) for p in past)
        trial = study.ask()
    chosen = kt.HyperParameters()
    for hp in space.space:  # parents precede their children, as in Keras Tuner's own _random_values
        chosen.merge([hp])
        if chosen.is_active(hp):
            chosen.values[hp.name] = _suggest(trial, hp.name, dists.get(hp.name), hp)
    return chosen.values


def _suggest(trial: optuna.Trial, name: str, dist: BaseDistribution | None, hp):
    if dist is None:
        return hp.value
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def ask_seed(seed: int, index: int, attempt: int = 0) -> int:
    """The sampler's seed for the study's `index`-th new trial (and its `attempt`-th re-ask). A
    sampler seeded with the study's seed alone would draw the same random start point at every
    ask, since each ask builds it anew."""
    entropy = [seed, index] if attempt == 0 else [seed, index, attempt]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def _key(values: dict) -> str:
    return json.dumps(values, sort_keys=True)


class TPEOracle(kt.Oracle):
    """A Keras Tuner oracle that asks TPE. `history` is set from the store under the study lock
    before each ask (`StudyOracle.next_trial`); `warm` holds an earlier study's trials."""

    max_asks = 20  # re-asks for values not yet run (Keras Tuner's random search tries as often)

    def __init__(self, *, startup: int, warm: Sequence[PastTrial] = (), **kwargs):
        super().__init__(**kwargs)
        self.startup, self.warm = startup, list(warm)
        self.history: list[PastTrial] = []

    def populate_space(self, trial_id):
        """TPE's values, unless this study has run or is running them: a trial is deterministic,
        so the same values again would teach nothing. The constant liar alone only makes a
        running point less likely (measured: 4 of 24 trials on a nine-point space ran a point
        that the other worker was running). A repeat is added as one more running trial, so the
        next ask looks elsewhere; a space that yields no new values stops, as random search does."""
        past, seen = [*self.warm, *self.history], {_key(p.values) for p in self.history}
        for attempt in range(self.max_asks):
            values = suggest(self.hyperparameters, past, maximize=self.objective.direction == "max",
                             startup=self.startup, seed=ask_seed(self.seed, len(self.trials), attempt))
            if _key(values) not in seen:
                return {"status": "RUNNING", "values": values}
            past.append(PastTrial(values, RUNNING))
        return {"status": "STOPPED", "values": None}
