"""Keras Tuner glue: a HyperModel that builds the two-tower model from a space, and a tuner
whose `run_trial` trains through `tuner.train.run`, the code `tuner train` runs.

The study's oracle lives in the store and is driven by the worker loop (tuner.search);
`trial_fn` is the function workers call for each trial.
"""
from __future__ import annotations

import gc
import tempfile

import tuner  # noqa: F401
import keras_tuner as kt
import tensorflow as tf

from tuner import train
from tuner.space import Space, load_space_text


class TwoTowerHyperModel(kt.HyperModel):
    """Builds the retrieval model for a trial: the space's base config with the trial's values."""

    def __init__(self, space: Space):
        super().__init__(name=space.name)
        self.space = space

    def declare_hyperparameters(self, hp: kt.HyperParameters) -> None:
        hp.merge(self.space.hyperparameters())

    def build(self, hp: kt.HyperParameters):
        cfg = self.space.config_for(hp.values)
        return train.build_model_for(cfg, train.prepare_split(cfg))

    def fit(self, hp: kt.HyperParameters, model, on_epoch=None, log=train.log_stderr, **kwargs) -> dict:
        return train.run(self.space.config_for(hp.values), model=model, on_epoch=on_epoch, log=log)


class StudyTuner(kt.engine.base_tuner.BaseTuner):
    """Runs one trial at a time through the shared training code and returns its flat metrics.

    The oracle passed to BaseTuner only carries the space (for Keras Tuner's own summaries):
    which trial runs next is decided by the study's oracle, restored from the store.
    """

    def __init__(self, space: Space):
        oracle = kt.oracles.RandomSearchOracle(
            objective=kt.Objective(space.search.objective, space.search.direction),
            max_trials=space.search.max_trials, hyperparameters=space.hyperparameters())
        self._workdir = tempfile.TemporaryDirectory(prefix="tuner-kt-")
        super().__init__(oracle, TwoTowerHyperModel(space), directory=self._workdir.name, project_name=space.name)

    def _populate_initial_space(self):
        """The space is declared up front; Keras Tuner's default builds models to discover it."""
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def run_trial(self, trial, on_epoch=None, log=train.log_stderr) -> dict[str, float]:
        hp = trial.hyperparameters
        try:
            model = self.hypermodel.build(hp)
            return train.flat_metrics(self.hypermodel.fit(hp, model, on_epoch=on_epoch, log=log))
        finally:
            # One worker runs many trials: free each trial's graphs so memory stays flat.
            tf.keras.backend.clear_session()
            gc.collect()


_tuners: dict[str, StudyTuner] = {}


def trial_fn(ctx) -> dict[str, float]:
    """The worker's trial function (`tuner.hypermodel:trial_fn`): train one trial of a study."""
    if ctx.space not in _tuners:
        _tuners.clear()
        _tuners[ctx.space] = StudyTuner(load_space_text(ctx.space, f"study '{ctx.study}'"))
    study_tuner = _tuners[ctx.space]
    trial = kt.engine.trial.Trial(ctx.hyperparameters, trial_id=ctx.kt_trial_id)
    return study_tuner.run_trial(trial, on_epoch=ctx.report_epoch,
                                 log=lambda line: train.log_stderr(f"  trial {ctx.number}: {line}"))
