"""Item-to-item transitions: what a specialist tries first when the next item is held out.

A user's next item is often one that followed their latest items in other users' histories.
From training, (a, b) counts how often item b came right after item a in a user's time order.
A user's scores sum the count rows of their `window` most recent items, weighted 1, 1/2, 1/3, ...
from the most recent (raw counts: on MovieLens-100K's val they beat row-normalised transition
probabilities on all three splits). The window is chosen on val, jointly with the popularity
window below. The recent items are those before the part scored (train for val, train and val
for test), as a history feature would see them; the counts come from training alone.

Fallback: items no transition reaches, ties among those that one does, and every item of a user
with no interaction before the part (a cold user) rank by popularity over the last `fraction`
of training (`recent_popularity`'s scores), below every item a transition reaches.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from tuner.baselines.history import before, followers, last_items, recent_counts
from tuner.baselines.recent_popularity import FRACTIONS
from tuner.data.types import Split

NAME = "Transitions"
# MovieLens-100K's val recall@10 rose with the window up to 50-100 on the random and leave-last-out
# splits (leave-last-out: 0.145 at 1, 0.185 at 10, 0.195 at 50) and peaked at 10 on the temporal one
WINDOWS = (1, 3, 10, 30, 100)
GRID = tuple({"window": w, "fraction": f} for w in WINDOWS for f in FRACTIONS)
# without a val part: the middle of MovieLens-100K's val choices (temporal 10, leave-last-out 30, random 100)
DEFAULT = {"window": 10, "fraction": 1.0}
TIE = 1e-3  # weight of the popularity fallback (in [0, 1)): below any transition, it orders their ties


def skip_reason(num_items: int) -> str | None:
    return None


class Model:
    """The transition counts once; each user's recent items once per (part, window)."""

    def __init__(self, split: Split, seed: int):  # seed: unused, counting draws nothing
        self.split = split
        self.counts = followers(split.train, split.dataset.num_items)
        self._recent: dict[tuple[str, int], sp.csr_matrix] = {}

    def fit(self, params: dict):
        window = int(params["window"])
        popular = recent_counts(self.split, float(params["fraction"]))
        fallback = (TIE * popular / (popular.max() + 1.0)).astype(np.float32)
        recent = {part: self.recent(part, window) for part in ("val", "test")}  # here: scores() runs in threads

        def scores(users: np.ndarray, part: str) -> np.ndarray:
            followed = (recent[part][users] @ self.counts).astype(np.float32)  # sparse: no dense float64 copy
            followed.data += 1.0  # every reached item above the fallback (counts and weights are positive)
            dense = followed.toarray()
            dense += fallback
            return dense

        return scores

    def recent(self, part: str, window: int) -> sp.csr_matrix:
        """[num_users + 1, num_items]: each user's `window` latest items before `part`, weighted."""
        if (part, window) not in self._recent:
            dataset = self.split.dataset
            self._recent[part, window] = last_items(before(self.split, part), dataset.num_users,
                                                    dataset.num_items, window)
        return self._recent[part, window]
