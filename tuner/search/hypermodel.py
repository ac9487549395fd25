"""The built-in trial: one trial of a study's space, trained by `tuner.train.run`, the code
`tuner train` runs, so `tuner best` configs reproduce their trial.

Keras Tuner gives this job to a HyperModel (build a model from hyperparameters, fit it), which
`TwoTowerHyperModel` is. No tuner runs it: keras-tuner 1.4.8's BaseTuner insists on an Oracle
and a project directory it writes to, while here the worker loop runs trials and the store holds
the oracle; `TrialRunner` is the worker's side of that loop. `build(hp)` makes the trial's one
Config, which the model carries (`model.cfg`) into `fit`.
"""
from __future__ import annotations

import gc
from pathlib import Path

import tuner  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import keras_tuner as kt
import tensorflow as tf

from tuner import train
from tuner.search import artifacts
from tuner.search.trial import TrialContext
from tuner.space import Space


class TwoTowerHyperModel(kt.HyperModel):
    """The two-tower retriever of a space: `build` compiles the model of a trial's values,
    `fit` trains and evaluates it (per-epoch hook, Hyperband's epochs)."""

    def __init__(self, space: Space, splits: train.SplitKeeper):
        super().__init__(name=space.name, tunable=False)
        self.space, self.splits = space, splits

    def build(self, hp: kt.HyperParameters):
        cfg = self.space.config_for(hp.values)  # the trial's one Config
        return train.build_model_for(cfg, self.splits.split_for(cfg))

    def fit(self, hp: kt.HyperParameters, model, *, on_epoch=None, log=train.log_stderr, initial_epoch: int = 0,
            **kwargs) -> dict:
        """train.run's metrics document on validation only (test is for the exported best config);
        trains epochs `initial_epoch`..`training.epochs`."""
        cfg = model.cfg
        return train.run(cfg, self.splits.split_for(cfg), model=model, on_epoch=on_epoch, log=log,
                         initial_epoch=initial_epoch, test=False,
                         measured=self.splits.references_for(cfg, ("val",), log))


class TrialRunner:
    """One worker's trial function for a study: the study's space, its hypermodel, and the split
    its trials train on (with MostPopular's and the baselines' val metrics on it), loaded at the
    first trial and again only if a trial's dataset, split, seed or history length differ from
    the last one's (a space may search those too)."""

    def __init__(self, space: Space):
        self.space = space
        self.splits = train.SplitKeeper()
        self.hypermodel = TwoTowerHyperModel(space, self.splits)
        # The collection after each trial would scan TensorFlow's ~440k Python objects, alive
        # for the process's life: 0.24 s of an idle machine's 1 s MovieLens epoch. Frozen now,
        # before any trial (after a last full collection), they are skipped: 0.01-0.07 s.
        gc.collect()
        gc.freeze()

    def __call__(self, ctx: TrialContext) -> dict[str, float]:
        hp = ctx.hyperparameters
        log = lambda line: train.log_stderr(f"  trial {ctx.number}: {line}")  # noqa: E731
        try:
            model = self.hypermodel.build(hp)
            initial_epoch = self._continue(ctx, model, log)
            epochs = model.cfg.training.epochs  # Hyperband's tuner/epochs already in it

            def report(epoch: int, metrics: dict) -> bool:
                return ctx.report_epoch(epoch, metrics, last=epoch >= epochs)

            result = self.hypermodel.fit(hp, model, on_epoch=report, log=log, initial_epoch=initial_epoch)
            if self.space.search.oracle == "hyperband" and ctx.artifacts and ctx.pruned_at is None:
                artifacts.save(model, Path(ctx.artifacts) / str(ctx.number))  # a later round may continue it
            return train.flat_metrics(result)
        finally:
            # One worker runs many trials: free each trial's graphs so memory stays flat.
            tf.keras.backend.clear_session()
            gc.collect()

    @staticmethod
    def _continue(ctx: TrialContext, model, log) -> int:
        """Hyperband's later rounds: the parent's weights into `model`; the epochs they already
        trained (0 when the trial starts fresh, or its parent's checkpoint is gone)."""
        if not ctx.initial_epoch:
            return 0
        folder = Path(ctx.artifacts or ".") / str(ctx.parent)
        if ctx.parent is not None and ctx.artifacts and artifacts.restore(model, folder):
            log(f"continues trial {ctx.parent} from epoch {ctx.initial_epoch} ({folder})")
            return ctx.initial_epoch
        log(f"warning: no checkpoint of its parent trial {ctx.parent} in {folder}: training from scratch "
            f"(epochs 1-{ctx.epochs} instead of {ctx.initial_epoch + 1}-{ctx.epochs})")
        return 0
