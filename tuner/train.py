"""Fit one config and measure it: the single code path behind `tuner train` and every search trial.

Trials and production training share this function so that `tuner best` configs reproduce
their trial: same data preparation, same seeds, same evaluation protocol.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Callable

import tuner  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import tensorflow as tf

from tuner.config import Config
from tuner.data import load_dataset, make_split
from tuner.data.pipeline import train_dataset
from tuner.data.types import Split
from tuner.errors import TrainingDiverged
from tuner.evaluate import evaluate, format_table, most_popular
from tuner.model import TwoTowerModel, build_model

EpochHook = Callable[[int, dict], None]




def log_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def configure_devices() -> None:
    """Memory growth on every visible GPU, so several workers can share a machine's GPUs."""
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised in this process
            pass


_split_cache: dict[str, Split] = {}


def prepare_split(cfg: Config) -> Split:
    """Loading and splitting is the same for every trial of a study: do it once per process."""
    key = json.dumps([dataclasses.asdict(cfg.dataset), dataclasses.asdict(cfg.split),
                      cfg.model.history_length, cfg.seed], sort_keys=True)
    if key not in _split_cache:
        _split_cache.clear()
        _split_cache[key] = make_split(load_dataset(cfg.dataset, seed=cfg.seed), cfg.split,
                                       cfg.model.history_length)
    return _split_cache[key]


def make_optimizer(cfg: Config) -> tf.keras.optimizers.Optimizer:
    kinds = {
        "adagrad": tf.keras.optimizers.Adagrad,
        "adam": tf.keras.optimizers.Adam,
        "sgd": tf.keras.optimizers.SGD,
        "rmsprop": tf.keras.optimizers.RMSprop,
    }
    return kinds[cfg.training.optimizer](learning_rate=cfg.training.learning_rate)


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
            row["val"] = evaluate(self.model, self.split, "val", ev.ks, ev.memory_mb)
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
            self.on_epoch(epoch + 1, {"loss": row["loss"], **{f"val_{k}": v for k, v in row.get("val", {}).items()}})

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def build_model_for(cfg: Config, split: Split, model_cls: type[TwoTowerModel] = TwoTowerModel) -> TwoTowerModel:
    """A freshly initialised, compiled model; seeded so a trial and `tuner train` start alike.
    `model_cls`: a TwoTowerModel subclass (experiments swap in variants of the loss)."""
    configure_devices()
    tf.keras.utils.set_random_seed(cfg.seed)
    model = build_model(cfg, split, model_cls=model_cls)
    model.compile(optimizer=make_optimizer(cfg))
    return model


def run(cfg: Config, out_dir: str | Path | None = None, on_epoch: EpochHook | None = None,
        log: Callable[[str], None] = log_stderr, model=None) -> dict:
    """Trains `cfg`, evaluates val/test beside MostPopular, and writes metrics.json and the model.

    Returns the metrics document (also written to `out_dir/metrics.json` when `out_dir` is set).
    `model`: one already built by `build_model_for(cfg, ...)` (the Keras Tuner HyperModel does).
    `on_epoch(epoch, {"loss": .., "val_recall@10": ..})` is called after every epoch (trial stores
    use it to keep learning curves of killed trials). Raises TrainingDiverged on a NaN/inf loss.
    """
    started = time.perf_counter()
    split = prepare_split(cfg)
    loaded = time.perf_counter()
    log(f"data: {split.dataset.name}: {split.dataset.num_users:,} users, {split.dataset.num_items:,} items; "
        f"train {len(split.train):,} / val {len(split.val):,} / test {len(split.test):,} interactions")

    if model is None:
        model = build_model_for(cfg, split)
    t, n = cfg.training, cfg.negatives
    stream = train_dataset(split.train, t.batch_size, cfg.seed, split.dataset.num_items,
                           uniform_negatives=n.mns_batch_size if n.strategy == "mns" else 0,
                           use_weights=t.use_weights)
    loop = _EpochLoop(cfg, split, on_epoch, log)
    model.fit(stream, epochs=t.epochs, verbose=0, callbacks=[loop])
    trained = time.perf_counter()

    ev = cfg.evaluation
    result = {
        "config": cfg.to_dict(),
        "config_hash": cfg.hash(),
        "epochs": loop.history,
        "best_epoch": loop.best_epoch or len(loop.history),
        "val": evaluate(model, split, "val", ev.ks, ev.memory_mb),
        "test": evaluate(model, split, "test", ev.ks, ev.memory_mb),
        "most_popular": {part: most_popular(split, part, ev.ks, ev.memory_mb) for part in ("val", "test")},
    }
    result["timings"] = {"load_s": round(loaded - started, 3), "train_s": round(trained - loaded, 3),
                         "eval_s": round(time.perf_counter() - trained, 3)}
    if out_dir is not None:  # a production run prints its results; trials are summarised by the store
        for part in ("val", "test"):
            if result[part]:
                log(f"{part}:\n" + format_table({"model": result[part], "MostPopular": result["most_popular"][part]}))
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
    """`{"val_recall@10": .., "test_ndcg@10": ..}`: the names searches optimise and reports show."""
    flat = {f"{part}_{name}": value for part in ("val", "test") for name, value in result[part].items()}
    flat.update({f"most_popular_{part}_{name}": value for part in ("val", "test")
                 for name, value in result["most_popular"][part].items()})
    return {k: float(v) for k, v in flat.items() if np.isfinite(v)}
