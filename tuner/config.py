"""The one training-config schema: dataclasses, their validation, and config files.

A config fully describes a run. Search spaces name its fields by dotted paths
(`tuner.config_paths`), and `tuner best` writes one back, so every part of the tool reads and
writes configs through this module only. A mapping becomes a `Config` through the generic typed
loader (`tuner.typed`); every validation failure is a `ConfigError` whose one-line message names
the file, the key and the allowed values.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tuner import safe_yaml, usercode
from tuner.errors import ConfigError
from tuner.safe_yaml import quote
from tuner.typed import build, one_of, require

DATASETS = ("movielens-100k", "grouplens", "files", "synthetic")
SPLITS = ("random", "temporal", "leave_last_out")
POOLINGS = ("mean", "max", "attention", "gru", "recent")
STRATEGIES = ("in_batch", "mns", "cbns", "full")  # full: every catalog item a negative, if it fits
CBNS_GRADIENTS = ("balanced", "paper")
LOGQ = ("none", "counts", "streaming")
OPTIMIZERS = ("adagrad", "adam", "sgd", "dense_adam", "rmsprop")  # adam, adagrad, sgd: row-sparse on embedding tables
METRICS = ("hit_rate", "recall", "ndcg")


@dataclass
class DatasetConfig:
    name: str = "movielens-100k"
    path: str | None = None  # grouplens: folder holding u.data, u.item, u.user
    interactions: str | None = None  # files: CSV/TSV/Parquet with user_id, item_id[, timestamp, weight]
    user_features: str | None = None  # files: table keyed by user_id
    item_features: str | None = None  # files: table keyed by item_id (optional title column)
    cache_dir: str | None = None  # where MovieLens-100K is unpacked; default ~/.cache/tuner
    num_users: int = 2000  # synthetic only
    num_items: int = 5000
    num_interactions: int = 100_000
    popularity_exponent: float = 1.0
    num_clusters: int = 20


@dataclass
class SplitConfig:
    method: str = "random"
    val_fraction: float = 0.1  # random and temporal; leave_last_out holds out one each
    test_fraction: float = 0.2
    seed: int = 42


@dataclass
class ModelConfig:
    embedding_dim: int = 32
    user_features: bool = False
    item_features: bool = False
    history_length: int = 0  # last N items strictly before each interaction; 0 = no history
    history_pooling: str = "mean"
    share_item_embedding: bool = False  # history and candidate tower use one item-id table
    last_item: bool = False  # the history's latest item, from a table of its own, beside the pooled history
    query_layers: list[int] = field(default_factory=list)  # hidden sizes of the query MLP
    candidate_layers: list[int] = field(default_factory=list)
    dropout: float = 0.0
    l2: float = 0.0  # λ·Σw² of every embedding table and tower kernel, added to the mean loss per query
    normalize: bool = False  # L2-normalise both towers' outputs
    id_dropout: float = 0.0  # share of training ids replaced by the trained out-of-vocabulary row
    towers: str | None = None  # "package.module:function" or "file.py:function": the user's towers (tuner.model.custom)
    params: dict[str, Any] = field(default_factory=dict)  # handed to model.towers; leaves searchable as model.params.<key>


@dataclass
class RetrievalConfig:
    temperature: float = 1.0
    logq: str = "none"  # none | counts (training frequencies) | streaming (Yi et al. 2019)
    logq_weight: float = 1.0  # w in u·v/τ − w·log q: 1 unbiased; w > 1 leaves (w − 1)·log q of popularity in the scores
    logq_window: float = 1.0  # counts: q from the most recent share of the training log; < 1 favours items on the rise
    estimator_buckets: int = 1 << 20  # streaming estimator hash size (arrays A and B)
    estimator_alpha: float = 0.01  # streaming estimator learning rate
    hard_negatives: int = 0  # keep only the N highest-scoring negatives per query; 0 = all
    remove_accidental_hits: bool = True  # mask every sampled column (in-batch, MNS, CBNS) holding the positive


@dataclass
class NegativesConfig:
    strategy: str = "in_batch"
    mns_batch_size: int = 256  # B': corpus-uniform negatives added to every batch (mns)
    cbns_memory_size: int = 4096  # M: FIFO bank of recent candidate embeddings (cbns)
    cbns_warmup_steps: int = 200  # in-batch only for this many steps before the bank is used
    cbns_gradient: str = "balanced"  # balanced: item tower from the in-batch softmax only; paper: one softmax


@dataclass
class TrainingConfig:
    optimizer: str = "adam"
    learning_rate: float = 0.01
    batch_size: int = 1024
    epochs: int = 10
    use_weights: bool = False  # weight each interaction's loss by its weight column (e.g. rating)
    early_stopping_patience: int = 0  # epochs without val improvement before stopping; 0 = off
    weight_decay: float = 0.0  # decoupled: each step every weight shrinks by learning_rate·weight_decay
    recency_half_life: float = 0.0  # share of the training log over which a row's loss weight halves; 0 = off


@dataclass
class EvaluationConfig:
    ks: list[int] = field(default_factory=lambda: [10, 100])
    monitor: str = "recall@10"  # the val metric printed each epoch and used for early stopping
    every_epoch: bool = True  # evaluate val after each epoch (learning curves, early stopping)
    memory_mb: int = 512  # bound on the score matrix of one evaluation chunk of a baseline with dense scores
    # per-epoch val (monitor, early stopping, pruning) on a seeded sample of this many val users;
    # null: all of them up to DEFAULT_VAL_USERS, else a sample of that many. Final metrics use all.
    val_users: int | None = None
    # strong simple recommenders scored beside the model and MostPopular, once per split (cached);
    # [] skips them, e.g. in experiments at a scale where fitting ALS's grid costs minutes. On
    # MovieLens-100K on 2 shared cores: recent_popularity 1-4 s, transitions 3-16 s, EASE 11-19 s, ALS 56-91 s
    baselines: list[str] = field(default_factory=lambda: list(BASELINES))


DEFAULT_VAL_USERS = 5000
BASELINES = ("ease", "als", "recent_popularity", "transitions")


@dataclass
class Config:
    seed: int = 42
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    negatives: NegativesConfig = field(default_factory=NegativesConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Stable short hash of the full config, stored with every run's metrics."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- validation and files ---------------------------------------------------------------


def validate(cfg: Config, source: str = "config") -> Config:
    """Range and consistency checks that types alone do not catch, section by section."""
    _check_dataset(cfg.dataset, source)
    _check_split(cfg.split, source)
    _check_model(cfg.model, source)
    _check_retrieval(cfg.retrieval, source)
    _check_negatives(cfg.negatives, cfg.retrieval, cfg.training, source)
    _check_training(cfg.training, cfg.split, source)
    _check_evaluation(cfg.evaluation, source)
    return cfg


def _check_dataset(dataset: DatasetConfig, source: str) -> None:
    """The dataset's name and the files or sizes it needs."""
    one_of(dataset.name, DATASETS, source, "dataset.name")
    if dataset.name == "grouplens":
        require(dataset.path is not None, source, "dataset.path",
                "required for dataset.name grouplens (a folder with u.data, u.item, u.user)")
    if dataset.name == "files":
        require(dataset.interactions is not None, source, "dataset.interactions",
                "required for dataset.name files (CSV, TSV or Parquet)")
    for key in ("path", "interactions", "user_features", "item_features"):
        value = getattr(dataset, key)
        if value is not None and dataset.name in ("grouplens", "files"):
            require(_exists(value), source, f"dataset.{key}", f"file not found: {_shown(value)}")
    if dataset.name == "synthetic":
        for key in ("num_users", "num_items", "num_interactions", "num_clusters"):
            require(getattr(dataset, key) >= 1, source, f"dataset.{key}", "must be >= 1")
        require(dataset.popularity_exponent >= 0, source, "dataset.popularity_exponent", "must be >= 0")


def _check_split(split: SplitConfig, source: str) -> None:
    """The split method and the held-out shares."""
    one_of(split.method, SPLITS, source, "split.method")
    for key in ("val_fraction", "test_fraction"):
        require(0 <= getattr(split, key) < 1, source, f"split.{key}", "must be in [0, 1)")
    require(split.val_fraction + split.test_fraction < 1, source, "split", "val_fraction + test_fraction must be < 1")


def _check_model(model: ModelConfig, source: str) -> None:
    """Tower sizes and options, and what custom towers leave to the user's function."""
    require(model.embedding_dim >= 1, source, "model.embedding_dim", "must be >= 1")
    require(model.history_length >= 0, source, "model.history_length", "must be >= 0")
    one_of(model.history_pooling, POOLINGS, source, "model.history_pooling")
    require(not model.share_item_embedding or model.history_length > 0, source, "model.share_item_embedding",
             "needs model.history_length > 0 (it shares the history's item embedding with the candidate tower)")
    require(not model.last_item or model.history_length > 0, source, "model.last_item",
            "needs model.history_length > 0 (it embeds the history's most recent item)")
    for key in ("query_layers", "candidate_layers"):
        require(all(x >= 1 for x in getattr(model, key)), source, f"model.{key}", "layer sizes must be >= 1")
    require(0 <= model.dropout < 1, source, "model.dropout", "must be in [0, 1)")
    require(model.l2 >= 0, source, "model.l2", "must be >= 0 (0 = off)")
    require(0 <= model.id_dropout < 1, source, "model.id_dropout", "must be in [0, 1)")
    if model.towers is not None:  # format only: the module is imported when the model is built
        usercode.parse(model.towers, f"{source}: model.towers")
        for key in ("history_pooling", "last_item", "query_layers", "candidate_layers", "dropout"):
            default = getattr(ModelConfig(), key)
            require(getattr(model, key) == default, source, f"model.{key}", f"a setting of the built-in towers, "
                    f"unused with model.towers: leave it at {default!r} (the towers function reads model.params)")
    require(model.towers is not None or not model.params, source, "model.params",
            "read only by the function in model.towers (set model.towers, or remove model.params)")


def _check_retrieval(retrieval: RetrievalConfig, source: str) -> None:
    """Temperature, the logQ correction and its estimator, hard negatives."""
    require(retrieval.temperature > 0 and math.isfinite(retrieval.temperature), source, "retrieval.temperature",
            "must be > 0")
    one_of(retrieval.logq, LOGQ, source, "retrieval.logq")
    require(retrieval.logq_weight >= 0, source, "retrieval.logq_weight", "must be >= 0 (1 = the unbiased correction)")
    require(retrieval.logq != "none" or retrieval.logq_weight == 1, source, "retrieval.logq_weight",
            "scales the logQ correction: set retrieval.logq to counts or streaming, or leave it at 1")
    require(0 < retrieval.logq_window <= 1, source, "retrieval.logq_window",
            "must be in (0, 1] (1 = all training interactions)")
    require(retrieval.logq == "counts" or retrieval.logq_window == 1, source, "retrieval.logq_window",
            "a share of the training log to count q over: set retrieval.logq to counts, or leave it at 1")
    require(retrieval.estimator_buckets >= 1, source, "retrieval.estimator_buckets", "must be >= 1")
    require(0 < retrieval.estimator_alpha <= 1, source, "retrieval.estimator_alpha", "must be in (0, 1]")
    require(retrieval.hard_negatives >= 0, source, "retrieval.hard_negatives", "must be >= 0 (0 = use all negatives)")


def _check_negatives(negatives: NegativesConfig, retrieval: RetrievalConfig,
                      training: TrainingConfig, source: str) -> None:
    """The negative strategy and its sizes; what it asks of logQ and the batch."""
    one_of(negatives.strategy, STRATEGIES, source, "negatives.strategy")
    require(negatives.mns_batch_size >= 1, source, "negatives.mns_batch_size", "must be >= 1")
    require(negatives.cbns_warmup_steps >= 0, source, "negatives.cbns_warmup_steps", "must be >= 0")
    one_of(negatives.cbns_gradient, CBNS_GRADIENTS, source, "negatives.cbns_gradient")
    require(negatives.strategy != "full" or retrieval.logq != "streaming", source, "retrieval.logq",
            "streaming estimates how often a column is sampled; negatives.strategy full samples none: "
            "use none or counts (counts: logq_weight and logq_window set a popularity prior)")
    if negatives.strategy == "cbns":
        require(negatives.cbns_memory_size >= training.batch_size, source, "negatives.cbns_memory_size",
                 f"{negatives.cbns_memory_size} is smaller than training.batch_size {training.batch_size}; "
                 "the bank must hold at least one batch")


def _check_training(training: TrainingConfig, split: SplitConfig, source: str) -> None:
    """The optimizer's settings; early stopping needs a validation part."""
    one_of(training.optimizer, OPTIMIZERS, source, "training.optimizer")
    require(training.learning_rate > 0, source, "training.learning_rate", "must be > 0")
    require(training.batch_size >= 2, source, "training.batch_size", "must be >= 2")
    require(training.epochs >= 1, source, "training.epochs", "must be >= 1")
    require(training.early_stopping_patience >= 0, source, "training.early_stopping_patience", "must be >= 0 (0 = off)")
    require(training.weight_decay >= 0, source, "training.weight_decay", "must be >= 0 (0 = off)")
    require(training.learning_rate * training.weight_decay < 1, source, "training.weight_decay",
            f"learning_rate × weight_decay = {training.learning_rate * training.weight_decay:g} must be < 1 "
            "(each step multiplies every weight by 1 − learning_rate·weight_decay)")
    require(training.recency_half_life >= 0, source, "training.recency_half_life",
            "must be >= 0 (0 = off; 0.25: a row a quarter of the training log old weighs half the latest)")
    if training.early_stopping_patience:
        require(split.val_fraction > 0 or split.method == "leave_last_out", source, "training.early_stopping_patience",
                 "needs a validation split (split.val_fraction > 0)")


def _check_evaluation(evaluation: EvaluationConfig, source: str) -> None:
    """Cut-offs, the monitored metric, memory bounds and the baselines."""
    require(len(evaluation.ks) >= 1 and all(k >= 1 for k in evaluation.ks), source, "evaluation.ks",
            "a non-empty list of integers >= 1")
    metric, _, k = evaluation.monitor.partition("@")
    require(metric in METRICS and k.isdigit() and int(k) in evaluation.ks, source, "evaluation.monitor",
             f"{evaluation.monitor!r} is not one of {', '.join(f'{x}@{k}' for x in METRICS for k in evaluation.ks)}")
    require(evaluation.memory_mb >= 1, source, "evaluation.memory_mb", "must be >= 1")
    require(evaluation.val_users is None or evaluation.val_users >= 1, source, "evaluation.val_users",
            f"must be an integer >= 1, or null for the default (all val users up to {DEFAULT_VAL_USERS:,}, "
            f"else a seeded sample of {DEFAULT_VAL_USERS:,})")
    require(len(set(evaluation.baselines)) == len(evaluation.baselines), source,
            "evaluation.baselines", f"a list of distinct names from {', '.join(BASELINES)} ([] for none)")
    for name in evaluation.baselines:
        one_of(name, BASELINES, source, "evaluation.baselines")


def from_dict(data: dict, source: str = "config") -> Config:
    return validate(build(Config, data, source, ""), source)


def _shown(text: str) -> str:
    """A path as the user wrote it, unless it holds control characters or is too long to print."""
    return text if text.isprintable() and len(text) <= safe_yaml.QUOTE_LIMIT else quote(text)


def _exists(path: str) -> bool:
    try:
        return Path(path).exists()
    except (OSError, ValueError):  # a NUL byte, or a name longer than the file system allows
        return False


def load(path: str | Path) -> Config:
    data = safe_yaml.read(path)
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections, got {type(data).__name__}")
    data = usercode.anchor_config(data, path)  # a towers file is relative to this config file
    return from_dict(data or {}, str(path))


def dump(cfg: Config, header: str = "") -> str:
    """YAML text of a config, with `header` as leading comments (`paths.write_out` writes it)."""
    lines = "".join(f"# {line}\n" for line in header.splitlines())
    return lines + yaml.safe_dump(cfg.to_dict(), sort_keys=False)
