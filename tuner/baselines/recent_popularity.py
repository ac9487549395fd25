"""Popularity over the most recent part of training: what a specialist tries first on a time split.

When test follows train in time, what is popular now predicts it better than what was popular
over the whole log. Items are ranked by their count among the last fraction of the training
interactions (in time order), the fraction chosen on val; items that window misses, and ties,
rank by their count over all of training (`history.recent_counts`). Every user gets the same
scores, so users without training history are served exactly like the others.
"""
from __future__ import annotations

import numpy as np

from tuner.baselines.history import recent_counts
from tuner.data.types import Split

NAME = "RecentPopularity"
FRACTIONS = (1.0, 0.5, 0.25, 0.1, 0.05)  # 1.0 is MostPopular: the window must beat it on val to be chosen
GRID = tuple({"fraction": f} for f in FRACTIONS)
DEFAULT = {"fraction": 1.0}  # without a val part nothing says the recent part is better


def skip_reason(num_items: int) -> str | None:
    return None


class Model:
    """Counts once per fraction; the scores are one [num_items] row every user shares."""

    def __init__(self, split: Split, seed: int):  # seed: unused, counting draws nothing
        self.split = split

    def fit(self, params: dict) -> np.ndarray:
        return recent_counts(self.split, float(params["fraction"]))
