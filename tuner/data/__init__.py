"""Datasets, splits and training pipelines.

`load_dataset` turns a `DatasetConfig` into a `Dataset` (dense indices, features, time
order) and `make_split` turns that into train/val/test `Interactions`, so everything after
this package sees one shape whatever the source. TensorFlow is only imported by
`tuner.data.pipeline`, which keeps loading and splitting usable without it.
"""
from __future__ import annotations

from tuner.config import DATASETS
from tuner.data.split import make_split
from tuner.data.types import Dataset, Feature, Interactions, Split
from tuner.errors import ConfigError


def load_dataset(cfg, seed: int = 42) -> Dataset:
    """The dataset `cfg` (a `tuner.config.DatasetConfig`) names; `seed` drives synthetic data only."""
    from tuner.data import files, movielens, synthetic

    if cfg.name == "movielens-100k":
        return movielens.load_movielens(cfg)
    if cfg.name == "grouplens":
        return movielens.load_grouplens(cfg)
    if cfg.name == "files":
        return files.load_files(cfg)
    if cfg.name == "synthetic":
        return synthetic.generate(cfg, seed)
    raise ConfigError(f"dataset.name: {cfg.name!r} is not one of {', '.join(DATASETS)}")


__all__ = ["Dataset", "Feature", "Interactions", "Split", "load_dataset", "make_split"]
