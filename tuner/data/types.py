"""The in-memory shapes every loader produces and every consumer (model, evaluation) reads.

Users and items are dense indices 1..N; index 0 is reserved for padding (empty history
slots, empty bank slots, unknown ids), so every id table has N + 1 rows; its row 0 is the
out-of-vocabulary row that ids unseen in training read. Features are
categorical indices looked up by user or item index, which lets the candidate tower encode
any item from its index alone (uniform negatives, the CBNS bank, full-corpus evaluation).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Feature:
    """A categorical feature table: `values[i]` is row i's category (0 = unknown/padding).

    `values` has shape [N + 1] (one category) or [N + 1, L] (a padded bag, e.g. title words
    or genres, pooled by the tower with zeros masked). Categories run 1..vocab_size - 1.
    """

    values: np.ndarray
    vocab_size: int


@dataclass
class Interactions:
    """Parallel arrays, one entry per interaction, sorted by (timestamp, original order)."""

    user: np.ndarray  # int32 user index, 1..num_users
    item: np.ndarray  # int32 item index, 1..num_items
    timestamp: np.ndarray  # int64; the row order where the source has no timestamps
    weight: np.ndarray  # float32; ones where the source has no weights
    history: np.ndarray | None = None  # int32 [n, history_length]: most recent last, 0-padded on the left

    def __len__(self) -> int:
        return len(self.user)

    def take(self, index: np.ndarray) -> "Interactions":
        return Interactions(
            self.user[index], self.item[index], self.timestamp[index], self.weight[index],
            None if self.history is None else self.history[index],
        )


@dataclass
class Dataset:
    name: str
    user_ids: np.ndarray  # raw user ids as str; user_ids[i] is user index i (user_ids[0] == "")
    item_ids: np.ndarray  # raw item ids as str; item_ids[j] is item index j (item_ids[0] == "")
    interactions: Interactions
    user_features: dict[str, Feature] = field(default_factory=dict)
    item_features: dict[str, Feature] = field(default_factory=dict)
    item_titles: np.ndarray | None = None  # str per item index, for printing recommendations

    @property
    def num_users(self) -> int:
        return len(self.user_ids) - 1

    @property
    def num_items(self) -> int:
        return len(self.item_ids) - 1


@dataclass
class Split:
    """Train/val/test interactions of one dataset; val may be empty."""

    dataset: Dataset
    train: Interactions
    val: Interactions
    test: Interactions

    def item_counts(self) -> np.ndarray:
        """Training frequency of every item index, shape [num_items + 1] (for logQ and MostPopular)."""
        return np.bincount(self.train.item, minlength=self.dataset.num_items + 1).astype(np.int64)

    def user_counts(self) -> np.ndarray:
        """Training interactions of every user index, shape [num_users + 1]; 0 marks a cold user,
        one the model never trained an id row for (it reads the out-of-vocabulary row)."""
        return np.bincount(self.train.user, minlength=self.dataset.num_users + 1).astype(np.int64)
