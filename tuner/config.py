"""The one training-config schema: dataclasses, YAML load/dump and validation.

A config fully describes a run. Search spaces name its fields by dotted paths
(`retrieval.temperature`), and `tuner best` writes one back, so every part of the tool reads
and writes configs through this module only. Every validation failure is a `ConfigError`
whose one-line message names the file, the key and the allowed values.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tuner.errors import ConfigError

DATASETS = ("movielens-100k", "grouplens", "files", "synthetic")
SPLITS = ("random", "temporal", "leave_last_out")
POOLINGS = ("mean", "max", "attention", "gru")
STRATEGIES = ("in_batch", "mns", "cbns")
LOGQ = ("none", "counts", "streaming")
OPTIMIZERS = ("adagrad", "adam", "sgd", "rmsprop")
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
    query_layers: list[int] = field(default_factory=list)  # hidden sizes of the query MLP
    candidate_layers: list[int] = field(default_factory=list)
    dropout: float = 0.0
    normalize: bool = False  # L2-normalise both towers' outputs


@dataclass
class RetrievalConfig:
    temperature: float = 1.0
    logq: str = "none"  # none | counts (training frequencies) | streaming (Yi et al. 2019)
    estimator_buckets: int = 1 << 20  # streaming estimator hash size (arrays A and B)
    estimator_alpha: float = 0.01  # streaming estimator learning rate
    hard_negatives: int = 0  # keep only the N highest-scoring negatives per query; 0 = all
    remove_accidental_hits: bool = False


@dataclass
class NegativesConfig:
    strategy: str = "in_batch"
    mns_batch_size: int = 256  # B': corpus-uniform negatives added to every batch (mns)
    cbns_memory_size: int = 4096  # M: FIFO bank of recent candidate embeddings (cbns)
    cbns_warmup_steps: int = 200  # in-batch only for this many steps before the bank is used


@dataclass
class TrainingConfig:
    optimizer: str = "adam"
    learning_rate: float = 0.01
    batch_size: int = 1024
    epochs: int = 10
    use_weights: bool = False  # weight each interaction's loss by its weight column (e.g. rating)
    early_stopping_patience: int = 0  # epochs without val improvement before stopping; 0 = off


@dataclass
class EvaluationConfig:
    ks: list[int] = field(default_factory=lambda: [10, 100])
    monitor: str = "recall@10"  # the val metric printed each epoch and used for early stopping
    every_epoch: bool = True  # evaluate val after each epoch (learning curves, early stopping)
    memory_mb: int = 512  # bound on the score matrix of one evaluation chunk


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


# --- loading and validation -------------------------------------------------------------


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return "null" if tp is type(None) else tp.__name__


def _coerce(value, tp, where: str):
    """Checks `value` against the annotation `tp`; ints are accepted where floats are."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
    elif origin is list:
        if isinstance(value, list):
            (item_tp,) = typing.get_args(tp)
            return [_coerce(v, item_tp, where) for v in value]
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def _build(cls, data, source: str, prefix: str):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"{source}: unknown key '{path}' (allowed: {', '.join(names)})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, source, f"{path}.")
        else:
            kwargs[key] = _coerce(value, tp, f"{source}: {path}")
    return cls(**kwargs)


def _require(ok: bool, source: str, key: str, message: str):
    if not ok:
        raise ConfigError(f"{source}: {key}: {message}")


def _one_of(value, allowed, source, key):
    _require(value in allowed, source, key, f"{value!r} is not one of {', '.join(allowed)}")


def validate(cfg: Config, source: str = "config") -> Config:
    """Range and consistency checks that types alone do not catch."""
    d, s, m, r, n, t, e = (cfg.dataset, cfg.split, cfg.model, cfg.retrieval, cfg.negatives,
                           cfg.training, cfg.evaluation)
    _one_of(d.name, DATASETS, source, "dataset.name")
    if d.name == "grouplens":
        _require(d.path is not None, source, "dataset.path", "required for dataset.name grouplens (a folder with u.data, u.item, u.user)")
    if d.name == "files":
        _require(d.interactions is not None, source, "dataset.interactions", "required for dataset.name files (CSV, TSV or Parquet)")
    for key in ("path", "interactions", "user_features", "item_features"):
        value = getattr(d, key)
        if value is not None and d.name in ("grouplens", "files"):
            _require(Path(value).exists(), source, f"dataset.{key}", f"file not found: {value}")
    if d.name == "synthetic":
        for key in ("num_users", "num_items", "num_interactions", "num_clusters"):
            _require(getattr(d, key) >= 1, source, f"dataset.{key}", "must be >= 1")
        _require(d.popularity_exponent >= 0, source, "dataset.popularity_exponent", "must be >= 0")
    _one_of(s.method, SPLITS, source, "split.method")
    for key in ("val_fraction", "test_fraction"):
        _require(0 <= getattr(s, key) < 1, source, f"split.{key}", "must be in [0, 1)")
    _require(s.val_fraction + s.test_fraction < 1, source, "split", "val_fraction + test_fraction must be < 1")
    _require(m.embedding_dim >= 1, source, "model.embedding_dim", "must be >= 1")
    _require(m.history_length >= 0, source, "model.history_length", "must be >= 0")
    _one_of(m.history_pooling, POOLINGS, source, "model.history_pooling")
    _require(not m.share_item_embedding or m.history_length > 0, source, "model.share_item_embedding",
             "needs model.history_length > 0 (it shares the history's item embedding with the candidate tower)")
    for key in ("query_layers", "candidate_layers"):
        _require(all(x >= 1 for x in getattr(m, key)), source, f"model.{key}", "layer sizes must be >= 1")
    _require(0 <= m.dropout < 1, source, "model.dropout", "must be in [0, 1)")
    _require(r.temperature > 0 and math.isfinite(r.temperature), source, "retrieval.temperature", "must be > 0")
    _one_of(r.logq, LOGQ, source, "retrieval.logq")
    _require(r.estimator_buckets >= 1, source, "retrieval.estimator_buckets", "must be >= 1")
    _require(0 < r.estimator_alpha <= 1, source, "retrieval.estimator_alpha", "must be in (0, 1]")
    _require(r.hard_negatives >= 0, source, "retrieval.hard_negatives", "must be >= 0 (0 = use all negatives)")
    _one_of(n.strategy, STRATEGIES, source, "negatives.strategy")
    _require(n.mns_batch_size >= 1, source, "negatives.mns_batch_size", "must be >= 1")
    _require(n.cbns_warmup_steps >= 0, source, "negatives.cbns_warmup_steps", "must be >= 0")
    if n.strategy == "cbns":
        _require(n.cbns_memory_size >= t.batch_size, source, "negatives.cbns_memory_size",
                 f"{n.cbns_memory_size} is smaller than training.batch_size {t.batch_size}; the bank must hold at least one batch")
    _one_of(t.optimizer, OPTIMIZERS, source, "training.optimizer")
    _require(t.learning_rate > 0, source, "training.learning_rate", "must be > 0")
    _require(t.batch_size >= 2, source, "training.batch_size", "must be >= 2")
    _require(t.epochs >= 1, source, "training.epochs", "must be >= 1")
    _require(t.early_stopping_patience >= 0, source, "training.early_stopping_patience", "must be >= 0 (0 = off)")
    if t.early_stopping_patience:
        _require(s.val_fraction > 0 or s.method == "leave_last_out", source, "training.early_stopping_patience",
                 "needs a validation split (split.val_fraction > 0)")
    _require(len(e.ks) >= 1 and all(k >= 1 for k in e.ks), source, "evaluation.ks", "a non-empty list of integers >= 1")
    metric, _, k = e.monitor.partition("@")
    _require(metric in METRICS and k.isdigit() and int(k) in e.ks, source, "evaluation.monitor",
             f"{e.monitor!r} is not one of {', '.join(f'{x}@{k}' for x in METRICS for k in e.ks)}")
    _require(e.memory_mb >= 1, source, "evaluation.memory_mb", "must be >= 1")
    return cfg


def from_dict(data: dict, source: str = "config") -> Config:
    return validate(_build(Config, data, source, ""), source)


def read_yaml(path: str | Path) -> Any:
    """`yaml.safe_load` of a file, with a one-line error for a missing or unparsable file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None


def load(path: str | Path) -> Config:
    data = read_yaml(path)
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections, got {type(data).__name__}")
    return from_dict(data or {}, str(path))


def dump(cfg: Config, path: str | Path | None = None, header: str = "") -> str:
    """YAML text of a config (optionally written to `path`), with `header` as leading comments."""
    lines = "".join(f"# {line}\n" for line in header.splitlines())
    text = lines + yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    if path is not None:
        Path(path).write_text(text)
    return text


# --- dotted paths (the search space names config fields this way) ------------------------


def paths() -> dict[str, Any]:
    """Every leaf path of the schema with its annotation, e.g. {'retrieval.temperature': float}."""
    out = {}
    hints = _hints(Config)
    for f in dataclasses.fields(Config):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            for key, sub in _hints(tp).items():
                out[f"{f.name}.{key}"] = sub
        else:
            out[f.name] = tp
    return out


def with_values(data: dict, values: dict[str, Any]) -> dict:
    """A deep copy of a raw config mapping with dotted-path values set."""
    data = copy.deepcopy(data or {})
    for dotted, value in values.items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = value
    return data
