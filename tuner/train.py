"""Fit one config and measure it: the single code path behind `tuner train` and every search trial.

Trials and production training share this function so that `tuner best` configs reproduce
their trial: same data preparation, same seeds, same evaluation protocol.
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
from tuner.heldout import sample_users, with_cold_users
from tuner.model import TwoTowerModel, build_model

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
    """Keeps the split of the last config it was asked for: many configs over the same data (a
    search worker's trials, an experiment's grid) load and split it once, and again only when
    the dataset, split, seed or history length change."""

    def __init__(self):
        self._inputs: tuple | None = None
        self._split: Split | None = None

    def split_for(self, cfg: Config) -> Split:
        inputs = (cfg.dataset, cfg.split, cfg.model.history_length, cfg.seed)  # all that prepare_split reads
        if self._split is None or inputs != self._inputs:
            self._split = None  # let the old split go before the new one loads
            self._split, self._inputs = prepare_split(cfg), inputs
        return self._split


def make_optimizer(cfg: Config) -> tf.keras.optimizers.Optimizer:
    kinds = {
        "adagrad": tf.keras.optimizers.Adagrad,
        "adam": tf.keras.optimizers.Adam,
        "sgd": tf.keras.optimizers.SGD,
        "rmsprop": tf.keras.optimizers.RMSprop,
    }
    t = cfg.training
    if t.weight_decay > 0:
        # Decoupled weight decay (Loshchilov & Hutter): every tf-keras optimizer applies
        # w ← w − learning_rate·weight_decay·w before its gradient update; Adam with it is AdamW.
        kinds["adam"] = tf.keras.optimizers.AdamW
        return kinds[t.optimizer](learning_rate=t.learning_rate, weight_decay=t.weight_decay)
    return kinds[t.optimizer](learning_rate=t.learning_rate)


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
                self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


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
        log: Callable[[str], None] = log_stderr, model=None, initial_epoch: int = 0) -> dict:
    """Trains `cfg` on `split` (from `prepare_split(cfg)`), evaluates val/test beside MostPopular,
    and writes metrics.json and the model.

    Returns the metrics document (also written to `out_dir/metrics.json` when `out_dir` is set).
    `model`: one already built by `build_model_for(cfg, split)` (experiments swap in variants).
    `on_epoch(epoch, {"loss": .., "val_recall@10": ..})` is called after every epoch (trial stores
    use it to keep learning curves of killed trials); returning True stops training after that
    epoch. `initial_epoch`: epochs the given model already trained (a Hyperband trial continuing
    its parent's weights): training runs epochs initial_epoch+1..training.epochs.
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

    ev = cfg.evaluation
    result = {
        "config": cfg.to_dict(),
        "config_hash": cfg.hash(),
        "epochs": loop.history,
        "best_epoch": loop.best_epoch or len(loop.history),
        "val": with_cold_users(lambda s: evaluate(model, s, "val", ev.ks, ev.memory_mb), split, "val"),
        "test": with_cold_users(lambda s: evaluate(model, s, "test", ev.ks, ev.memory_mb), split, "test"),
        "most_popular": {part: with_cold_users(lambda s, part=part: most_popular(s, part, ev.ks, ev.memory_mb),
                                               split, part) for part in ("val", "test")},
        "baselines": baselines_for(cfg, split, log),  # computed once per split, then read from the cache
    }
    result["timings"] = {"load_s": round(loaded - started, 3), "train_s": round(trained - loaded, 3),
                         "eval_s": round(time.perf_counter() - trained, 3)}
    if out_dir is not None:  # a production run prints its results; trials are summarised by the store
        for part in ("val", "test"):
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
    baseline has none), the names `tuner.report.references` reads back."""
    flat = {f"{part}_{name}": value for part in ("val", "test") for name, value in result[part].items()}
    flat.update({f"most_popular_{part}_{name}": value for part in ("val", "test")
                 for name, value in result["most_popular"][part].items()})
    flat.update({f"{baseline}_{part}_{name}": value for baseline, entry in result.get("baselines", {}).items()
                 if "skipped" not in entry for part in ("val", "test") for name, value in entry[part].items()})
    return {k: float(v) for k, v in flat.items() if np.isfinite(v)}
