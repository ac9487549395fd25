"""The study's Keras Tuner oracle, kept in the store and asked under the study lock.

The only code that touches Keras Tuner's private fields; each access says which, and every one
was checked against keras-tuner 1.4.8 (the version setup.cfg pins). Keras Tuner keeps trials in
project files, not in `Oracle.get_state()`, so each trial's state lives in its store row and
the oracle never writes files. Keras Tuner's Trial objects never leave this module: the worker
gets a `Handout` and gives back trial ids. Importing it imports keras_tuner, and with it
TensorFlow (~5 s): a worker does so when it starts, never while holding the lock.
"""
from __future__ import annotations

import collections
import contextlib
import copy
import io
import json
import warnings
from dataclasses import dataclass

import numpy as np

import tuner  # noqa: F401  (sets TF_USE_LEGACY_KERAS before keras_tuner imports TensorFlow)
import keras_tuner as kt
from keras_tuner.src.engine import oracle as kt_oracle_module  # private module: LOCKS, THREADS (1.4.8)
from keras_tuner.src.engine.trial import Trial  # Trial.from_state is not exported (1.4.8)

from tuner.search import tpe
from tuner.search.study import bayesian_initial_points
from tuner.store import LockedStudy, Study
from tuner.store.schema import COMPLETED, FAILED, RUNNING


class _NoFiles:
    """The store holds oracle and trial states: keras-tuner must not write project files."""

    def save(self):  # Oracle.save writes oracle.json (1.4.8)
        pass

    def _save_trial(self, trial):  # private: Oracle._save_trial writes trial.json (1.4.8)
        pass


class _Enqueued:
    """Hands out the study's base values (`search.base_first`) and enqueued ones (`search.enqueue`)
    as its first trials, then asks the oracle. Keras Tuner numbers a new trial by the trials it
    has, so the count says which."""

    enqueued: list = []

    def populate_space(self, trial_id):
        if len(self.trials) < len(self.enqueued):
            return {"status": "RUNNING", "values": dict(self.enqueued[len(self.trials)])}
        return super().populate_space(trial_id)


def _without_files(base: type, *mixins: type) -> type:
    return type(f"Store{base.__name__}", (_NoFiles, *mixins, base), {})


ORACLE_CLASSES = {"random": _without_files(kt.oracles.RandomSearchOracle, _Enqueued),
                  "bayesian": _without_files(kt.oracles.BayesianOptimizationOracle, _Enqueued),
                  "hyperband": _without_files(kt.oracles.HyperbandOracle),
                  "grid": _without_files(kt.oracles.GridSearchOracle),
                  "tpe": _without_files(tpe.TPEOracle, _Enqueued)}


def new_oracle(study: Study):
    """A fresh oracle with the study's stored settings (its state is restored separately)."""
    s = study.settings
    kwargs = dict(objective=kt.Objective(study.objective, study.direction),
                  hyperparameters=hyperparameters(s.hyperparameters),
                  seed=s.search.seed if study.oracle == "tpe" else spread_seed(s.search.seed),
                  max_retries_per_trial=s.search.retries,
                  max_consecutive_failed_trials=None)  # a failing trial must not stop the study
    cls = ORACLE_CLASSES[study.oracle]
    if study.oracle == "hyperband":
        oracle = cls(max_epochs=s.search.max_epochs, factor=s.search.factor, **kwargs)
        oracle.max_trials = s.search.max_trials  # HyperbandOracle takes no max_trials, but create_trial honours it
    elif study.oracle == "bayesian":
        points = s.initial_points or bayesian_initial_points(s.search.max_trials)  # pinned when a budget grew
        oracle = cls(max_trials=s.search.max_trials, num_initial_points=points, **kwargs)
    elif study.oracle == "tpe":
        startup = s.initial_points or tpe.startup_trials(s.search.max_trials)  # pinned when a budget grew
        warm = [tpe.PastTrial(**t) for t in (s.warm_trials or {}).get("trials", [])]
        oracle = cls(max_trials=s.search.max_trials, startup=startup, warm=warm, **kwargs)
    else:
        oracle = cls(max_trials=s.search.max_trials, **kwargs)
    oracle.verbose = 0
    if s.base or s.enqueued:
        oracle.enqueued = ([s.base] if s.base else []) + s.enqueued
    return oracle


def spread_seed(seed: int | None) -> int | None:
    """Keras Tuner's seed for a study's `search.seed`. Its oracles draw parameter after parameter
    from `random.Random(state)`, adding 1 to the state each time, so nearby seeds walk nearly the
    same states: on `full.yaml`, random search seeded 2 and 3 drew 39 of the same 40 trials, 1 and
    4 drew 35. SeedSequence puts each seed's start far from the others'. (TPE spreads its own:
    `tpe.ask_seed`.) A resumed study keeps the state it stored."""
    return None if seed is None else int(np.random.SeedSequence(seed).generate_state(1)[0] >> 1)


def hyperparameters(config: dict) -> kt.HyperParameters:
    """keras_tuner.HyperParameters from its config. `from_config` turns the condition dicts
    of the config it is given into objects in place, so it gets a copy: the stored settings
    are read again on every restore."""
    return kt.HyperParameters.from_config(copy.deepcopy(config))


def to_json(value) -> str:
    """json.dumps that turns numpy scalars in hyperparameter values into Python numbers."""
    return json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else _unserialisable(v))


def _unserialisable(value):
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _dump_state(oracle, kind: str) -> str:
    """Oracle.get_state() plus what some oracles keep outside it, as JSON."""
    state = oracle.get_state()
    state["tried_so_far"] = sorted(state["tried_so_far"])  # a set: sorted so equal states give equal text
    extra = {}
    if kind == "grid":  # private: the walk order and pending queue are not in get_state() (1.4.8)
        order = oracle._ordered_ids
        extra["grid"] = {"memory": order._memory, "next": [[k, v] for k, v in order._next_index.items()],
                         "last": order._last_index, "populate_next": oracle._populate_next}
    if kind == "bayesian":  # private: the optimizer's random restarts draw from _random_state (1.4.8)
        name, keys, pos, has_gauss, cached = oracle._random_state.get_state()
        extra["rng"] = [name, keys.tolist(), pos, has_gauss, cached]
    return to_json({"oracle": state, **extra})


def _load_state(oracle, kind: str, text: str) -> None:
    state = json.loads(text)
    oracle.set_state(state["oracle"])
    if kind == "grid":  # private fields, as in _dump_state (1.4.8)
        g, order = state["grid"], oracle._ordered_ids
        order._memory = g["memory"]
        order._data_to_index = {data: i for i, data in enumerate(g["memory"])}
        order._next_index = collections.defaultdict(lambda: None, {k: v for k, v in g["next"]})
        order._last_index = g["last"]
        oracle._populate_next = g["populate_next"]
    if kind == "bayesian":  # private field, as in _dump_state (1.4.8)
        name, keys, pos, has_gauss, cached = state["rng"]
        oracle._random_state.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


@dataclass(frozen=True)
class Handout:
    """A trial the oracle handed out, as the store row and the trial context need it."""

    kt_trial_id: str  # shared by re-runs of the same values
    values: dict  # plain JSON values; Hyperband adds tuner/epochs, tuner/initial_epoch, tuner/trial_id
    hp_config: dict  # the values' HyperParameters config
    retries: int  # earlier failed runs of these values
    state: str  # the keras-tuner Trial's state JSON, kept in the trial's row


class StudyOracle:
    """A worker's copy of the study's oracle, refreshed under the lock from what changed since.

    Rebuilding every trial from JSON on each visit costs ~0.2 ms per trial (100 ms per visit
    at 500 trials), so only rows written after the cached version are re-read.
    Anything going wrong mid-visit drops the copy: the next visit rebuilds it from the store.
    """

    def __init__(self, study: Study):
        self.study = study
        self.oracle = None
        self.version = -1
        self.state_text: str | None = None

    def restore(self, study: LockedStudy) -> None:
        """Brings the copy up to the locked study and the trial rows written since."""
        since = self.version
        if self.oracle is None:
            self.oracle, since = new_oracle(self.study), None
            self.oracle.trials = {}
        elif study.version == self.version:
            return
        for kt_id, text in study.kt_states(since):
            self.oracle.trials[kt_id] = Trial.from_state(json.loads(text))
        if study.oracle_state is not None:
            _load_state(self.oracle, self.study.oracle, study.oracle_state)
        self.oracle.max_trials = study.settings.search.max_trials  # a re-run search may have extended it
        self.version, self.state_text = study.version, study.oracle_state

    def save(self, study: LockedStudy, version: int, force: bool) -> None:
        text = _dump_state(self.oracle, self.study.oracle)
        if force or text != self.state_text:
            study.save_oracle_state(text, version)
            self.version, self.state_text = version, text

    def drop(self) -> None:
        if self.oracle is not None:
            # private: keras-tuner's @synchronized keeps a lock per Oracle instance forever (1.4.8)
            kt_oracle_module.LOCKS.pop(self.oracle, None)
            kt_oracle_module.THREADS.pop(self.oracle, None)
        self.oracle, self.version, self.state_text = None, -1, None

    # --- what the worker asks ------------------------------------------------------------

    def next_trial(self, study: LockedStudy, tuner_id: str) -> Handout | str:
        """The next trial for `tuner_id`, or "wait" (nothing to hand out yet) or "done". TPE
        learns from the store's trials as they are now, this visit's own outcome included."""
        if self.study.oracle == "tpe":
            self.oracle.history = tpe.past_trials(study.sampler_history())
        trial = self.oracle.create_trial(tuner_id)
        if trial.status != RUNNING:
            return "wait" if trial.status == "IDLE" else "done"
        values = json.loads(to_json(trial.hyperparameters.values))
        retries = self.oracle._run_times.get(trial.trial_id, 0)  # private: runs per trial id (1.4.8)
        return Handout(trial.trial_id, values, trial.hyperparameters.get_config(), retries, self._state(trial))

    def exhausted(self) -> bool:
        """Whether the trial budget is spent and no trial waits for a retry: then nothing is left
        to hand out (without asking, which would draw new values). An oracle without a budget
        (Hyperband's brackets) is never exhausted here."""
        oracle = self.oracle
        return (bool(oracle.max_trials) and len(oracle.trials) >= oracle.max_trials
                and not oracle._retry_queue)  # private: the retry queue (1.4.8)

    def complete(self, kt_trial_id: str, objective: float, step: int) -> str:
        """Records a finished trial's objective; the trial's new state JSON."""
        trial = self.oracle.trials[kt_trial_id]
        self.oracle.update_trial(kt_trial_id, {self.study.objective: objective}, step=step)
        trial.status = COMPLETED
        self.oracle.end_trial(trial)
        return self._state(trial)

    def fail(self, kt_trial_id: str, message: str) -> str:
        """A trial function's failure: final, its values are not run again."""
        trial = self.oracle.trials[kt_trial_id]
        trial.status, trial.message = FAILED, message
        self.oracle.end_trial(trial)
        return self._state(trial)

    def lose(self, kt_trial_id: str, message: str) -> tuple[bool, str]:
        """A trial whose worker died: (re-queued within the study's retries, new state JSON)."""
        trial = self.oracle.trials[kt_trial_id]
        trial.status, trial.message = "INVALID", message  # keras-tuner's "crashed, may be retried"
        self.oracle.end_trial(trial)
        return kt_trial_id in self.oracle._retry_queue, self._state(trial)  # private: the retry queue (1.4.8)

    def requeue(self, kt_trial_id: str) -> str:
        """Hands an interrupted trial's values out again without counting a failure, as
        keras-tuner's own Oracle.reload() does with the trials that were running."""
        for tuner_id, trial in list(self.oracle.ongoing_trials.items()):
            if trial.trial_id == kt_trial_id:
                del self.oracle.ongoing_trials[tuner_id]
        if kt_trial_id not in self.oracle._retry_queue:  # private: the retry queue (1.4.8)
            self.oracle._retry_queue.append(kt_trial_id)
        return self._state(self.oracle.trials[kt_trial_id])

    def live_trial_ids(self) -> set[str]:
        """Hyperband: ids of the trials a later round may still continue: those of a bracket's
        round whose next round is not full yet. Empty for other oracles. (Parents of running
        trials are the caller's to keep.)"""
        hb = self.oracle
        live = set()
        # private: HyperbandOracle._brackets, _get_num_rounds, _get_size (1.4.8)
        for bracket in getattr(hb, "_brackets", None) or []:
            num, rounds = bracket["bracket_num"], bracket["rounds"]
            for r, entries in enumerate(rounds):
                last = r + 1 >= hb._get_num_rounds(num)
                next_full = r + 1 < len(rounds) and len(rounds[r + 1]) >= hb._get_size(num, r + 1)
                if not last and not next_full:
                    live.update(entry["id"] for entry in entries)
        return live

    @staticmethod
    def _state(trial) -> str:
        return to_json(trial.get_state())


@contextlib.contextmanager
def quiet():
    """keras-tuner prints retry notices and its @synchronized warns about threading.currentThread()."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.filterwarnings("ignore", r"(currentThread|getName)\(\) is deprecated", DeprecationWarning)
        yield
