"""Fit one config and measure it: the single code path behind `tuner train` and every search trial.

Trials and production training share this function so that `tuner best` configs reproduce
their trial: same data preparation, same seeds, same evaluation protocol. A trial scores
validation only; test is scored when a config is trained for good (`tuner train`).
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Callable

import tuner  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import tensorflow as tf

from tuner import memory
from tuner.config import Config
from tuner.data import load_dataset, make_split
from tuner.data.split import check_sizes
from tuner.data.pipeline import train_dataset
from tuner.data.types import Dataset, Split
from tuner.errors import TrainingDiverged
from tuner.baselines import baselines_for, columns as baseline_columns, describe as describe_baselines
from tuner.evaluate import evaluate, format_table, most_popular
from tuner.heldout import PARTS, sample_users, with_cold_users
from tuner.model import TwoTowerModel, build_model
from tuner.model.optimizers import build_optimizer

EpochHook = Callable[[int, dict], "bool | None"]  # returns True to stop after this epoch (pruning)




def log_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def configure_devices() -> None:
    """Memory growth on every visible GPU, so several workers can share a machine's GPUs."""
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised in this process
            pass


def prepare_split(cfg: Config, dataset: Dataset | None = None) -> Split:
    """The dataset `cfg` names, split as it says (`SplitKeeper` for many configs). `dataset`: the
    data already loaded (`tuner train` loads it before TensorFlow, so bad data fails fast)."""
    if dataset is None:
        memory.check(cfg)  # synthetic data or histories can be the runaway themselves
        dataset = load_dataset(cfg.dataset, seed=cfg.seed)
    memory.check(cfg, dataset=dataset)  # before the split allocates histories
    split = make_split(dataset, cfg.split, cfg.model.history_length)
    for warning in check_sizes(split, cfg.split, cfg.dataset.interactions or cfg.dataset.path or cfg.dataset.name):
        log_stderr(warning)
    return split


class SplitKeeper:
    """Keeps the split of the last config it was asked for, and the references measured on it:
    many configs over the same data (a search worker's trials, an experiment's grid) load and
    split it once, and again only when the dataset, split, seed or history length change."""

    def __init__(self):
        self._inputs: tuple | None = None
        self._split: Split | None = None
        self._references: tuple[tuple, dict] | None = None

    def split_for(self, cfg: Config) -> Split:
        inputs = (cfg.dataset, cfg.split, cfg.model.history_length, cfg.seed)  # all that prepare_split reads
        if self._split is None or inputs != self._inputs:
            self._split = self._references = None  # let the old split go before the new one loads
            self._split, self._inputs = prepare_split(cfg), inputs
        return self._split

    def references_for(self, cfg: Config, parts: tuple[str, ...], log=log_stderr) -> dict:
        """`references(cfg, split, parts)` on the kept split, measured once per evaluation setting
        (a trial would otherwise rank MostPopular again and re-read the baselines' cache)."""
        split = self.split_for(cfg)
        ev = cfg.evaluation
        key = (self._inputs, tuple(ev.ks), ev.memory_mb, ev.monitor, tuple(ev.baselines), tuple(parts))
        if self._references is None or self._references[0] != key:
            self._references = key, references(cfg, split, parts, log)
        return self._references[1]


def references(cfg: Config, split: Split, parts: tuple[str, ...] = PARTS, log=log_stderr) -> dict:
    """What a model is judged beside, on `parts`: `{"most_popular": {part: metrics},
    "baselines": tuner.baselines.baselines_for(...)}`; they depend on the split, not the model."""
    ev = cfg.evaluation
    popular = {part: with_cold_users(lambda s, part=part: most_popular(s, part, ev.ks, ev.memory_mb), split, part)
               for part in parts}
    return {"most_popular": popular, "baselines": baselines_for(cfg, split, log, parts)}


def make_optimizer(cfg: Config) -> tf.keras.optimizers.Optimizer:
    t = cfg.training
    return build_optimizer(t.optimizer, t.learning_rate, t.weight_decay)


def _divergence_hint(cfg: Config) -> str:
    r, m = cfg.retrieval, cfg.model
    if not m.normalize and r.temperature < 0.1:
        return (f"temperature {r.temperature:g} without model.normalize lets scores/τ overflow; "
                "set model.normalize: true or raise retrieval.temperature")
    if r.temperature < 0.01:
        return f"temperature {r.temperature:g} is very small; try 0.01-0.2"
    return f"learning rate {cfg.training.learning_rate:g} may be too high for {cfg.training.optimizer}"


class _EpochLoop(tf.keras.callbacks.Callback):
    """Per-epoch progress, validation, early stopping and divergence detection."""

    def __init__(self, cfg: Config, split: Split, on_epoch: EpochHook | None, log):
        super().__init__()
        self.cfg, self.split, self.on_epoch, self.log = cfg, split, on_epoch, log
        self.history: list[dict] = []
        self.best_value, self.best_epoch, self.best_weights = -math.inf, 0, None
        self.stale = 0
        self.pruned = False  # the search's pruner stopped training after the last epoch
        self.full_val = True  # the per-epoch val rows cover every val user, as final metrics do

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            raise TrainingDiverged(f"loss became {loss} at epoch {len(self.history) + 1}, step {batch + 1}: "
                                   f"{_divergence_hint(self.cfg)}")

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.started
        ev = self.cfg.evaluation
        row = {"epoch": epoch + 1, "loss": float(logs["loss"]), "seconds": round(seconds, 3),
               "examples_per_s": round(len(self.split.train) / max(seconds, 1e-9), 1)}
        line = (f"epoch {epoch + 1}/{self.cfg.training.epochs}  loss {row['loss']:.4f}  "
                f"{row['examples_per_s']:,.0f} ex/s  {seconds:.1f}s")
        if ev.every_epoch and len(self.split.val):
            # a seeded sample of val users (evaluation.val_users): the same users every epoch and trial
            users = sample_users(self.split, "val", ev.val_users, self.cfg.split.seed)
            self.full_val = users is None
            row["val"] = evaluate(self.model, self.split, "val", ev.ks, ev.memory_mb, users=users)
            value = row["val"][ev.monitor]
            line += f"  val {ev.monitor} {value:.4f}"
            if value > self.best_value:
                self.best_value, self.best_epoch, self.stale = value, epoch + 1, 0
                if self.cfg.training.early_stopping_patience:
                    self.best_weights = self.model.get_weights()
            else:
                self.stale += 1
                patience = self.cfg.training.early_stopping_patience
                if patience and self.stale >= patience:
                    line += f"  (no improvement for {patience} epochs: stopping, best epoch {self.best_epoch})"
                    self.model.stop_training = True
        self.history.append(row)
        self.log(line)
        if self.on_epoch is not None:
            metrics = {"loss": row["loss"], **{f"val_{k}": v for k, v in row.get("val", {}).items()}}
            if self.on_epoch(epoch + 1, metrics) is True:  # a search's pruner stops the trial here
                self.model.stop_training = self.pruned = True

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)

    def measured_val(self) -> dict | None:
        """The val metrics of the weights the model ends with, when an epoch already measured them
        on every val user (the last epoch's, or the best one's when early stopping restored it);
        a pruned trial's last epoch, sampled or not (what the pruner judged). None otherwise."""
        if not self.history or "val" not in self.history[-1] or not (self.full_val or self.pruned):
            return None
        restored = self.best_weights is not None and not self.pruned
        return next(row["val"] for row in self.history[::-1] if not restored or row["epoch"] == self.best_epoch)


def build_model_for(cfg: Config, split: Split, model_cls: type[TwoTowerModel] = TwoTowerModel) -> TwoTowerModel:
    """A freshly initialised, compiled model; seeded so a trial and `tuner train` start alike.
    `model_cls`: a TwoTowerModel subclass (experiments swap in variants of the loss)."""
    memory.check(cfg, dataset=split.dataset)  # before any table is allocated
    configure_devices()
    tf.keras.utils.set_random_seed(cfg.seed)
    model = build_model(cfg, split, model_cls=model_cls)
    model.compile(optimizer=make_optimizer(cfg))
    return model


def run(cfg: Config, split: Split, out_dir: str | Path | None = None, on_epoch: EpochHook | None = None,
        log: Callable[[str], None] = log_stderr, model=None, initial_epoch: int = 0, test: bool = True,
        measured: dict | None = None) -> dict:
    """Trains `cfg` on `split` (from `prepare_split(cfg)`), evaluates it beside MostPopular and the
    baselines, and writes metrics.json and the model.

    Returns the metrics document (also written to `out_dir/metrics.json` when `out_dir` is set).
    `model`: one already built by `build_model_for(cfg, split)` (experiments swap in variants).
    `on_epoch(epoch, {"loss": .., "val_recall@10": ..})` is called after every epoch (trial stores
    use it to keep learning curves of killed trials); returning True stops training after that
    epoch, and the final val metrics are then that epoch's (nothing is evaluated again).
    `initial_epoch`: epochs the given model already trained (a Hyperband trial continuing its
    parent's weights): training runs epochs initial_epoch+1..training.epochs.
    `test`: also score the test part (`tuner train`). A search trial passes False: validation
    chooses, and test is touched once, by training the exported best config.
    `measured`: `references(cfg, split, parts)` already at hand (a worker's `SplitKeeper`).
    Raises TrainingDiverged on a NaN/inf loss.
    """
    started = time.perf_counter()
    log(f"data: {split.dataset.name}: {split.dataset.num_users:,} users, {split.dataset.num_items:,} items; "
        f"train {len(split.train):,} / val {len(split.val):,} / test {len(split.test):,} interactions")

    if model is None:
        model = build_model_for(cfg, split)
    loaded = time.perf_counter()  # timings.load_s: building the model (the split comes loaded)
    t, n = cfg.training, cfg.negatives
    stream = train_dataset(split.train, t.batch_size, cfg.seed, split.dataset.num_items,
                           uniform_negatives=n.mns_batch_size if n.strategy == "mns" else 0,
                           use_weights=t.use_weights, recency_half_life=t.recency_half_life)
    loop = _EpochLoop(cfg, split, on_epoch, log)
    model.fit(stream, epochs=t.epochs, initial_epoch=initial_epoch, verbose=0, callbacks=[loop])
    trained = time.perf_counter()

    ev, parts = cfg.evaluation, PARTS if test else ("val",)
    known = loop.measured_val()

    def measure(s: Split, part: str) -> dict:  # the whole part: what an epoch measured, if it did
        if part == "val" and s is split and known is not None:
            return dict(known)
        return evaluate(model, s, part, ev.ks, ev.memory_mb)

    result = {"config": cfg.to_dict(), "config_hash": cfg.hash(), "epochs": loop.history,
              "best_epoch": loop.best_epoch or len(loop.history)}
    if loop.pruned and known is not None:  # the pruner judged the last epoch: its metrics stand (no cold users)
        result["val"] = dict(known)
    result.update({part: with_cold_users(lambda s, part=part: measure(s, part), split, part)
                   for part in parts if part not in result})
    result.update(measured if measured is not None else references(cfg, split, parts, log))
    result["timings"] = {"load_s": round(loaded - started, 3), "train_s": round(trained - loaded, 3),
                         "eval_s": round(time.perf_counter() - trained, 3)}
    if out_dir is not None:  # a production run prints its results; trials are summarised by the store
        for part in parts:
            if result[part]:
                log(f"{part}:\n" + format_table({"model": result[part], "MostPopular": result["most_popular"][part],
                                                 **baseline_columns(result["baselines"], part)}))
        log("\n".join(describe_baselines(result["baselines"])))
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        from tuner.export import export_model  # only production runs export; trials skip the import

        export_model(model, split, out / "model", k=max(ev.ks))
        result["timings"]["total_s"] = round(time.perf_counter() - started, 3)
        (out / "metrics.json").write_text(json.dumps(result, indent=2))
        log(f"wrote {out / 'metrics.json'} and {out / 'model'}")
    result["timings"]["total_s"] = round(time.perf_counter() - started, 3)
    return result


def flat_metrics(result: dict) -> dict[str, float]:
    """`{"val_recall@10": .., "test_ndcg@10": ..}`: the names searches optimise and reports show;
    the baselines' as `most_popular_val_recall@10`, `ease_test_ndcg@10`, `als_...` (a skipped
    baseline has none), the names `tuner.report.references` reads back. A part the run did not
    score (test, in a search trial) has no names."""
    flat = {f"{part}_{name}": value for part in PARTS for name, value in result.get(part, {}).items()}
    flat.update({f"most_popular_{part}_{name}": value for part in PARTS
                 for name, value in result["most_popular"].get(part, {}).items()})
    flat.update({f"{baseline}_{part}_{name}": value for baseline, entry in result.get("baselines", {}).items()
                 if "skipped" not in entry for part in PARTS for name, value in entry.get(part, {}).items()})
    return {k: float(v) for k, v in flat.items() if np.isfinite(v)}
