"""EASE (Steck 2019): a closed-form item-item model, strong on small catalogues.

B = I − P·diag(1/diag(P)) with P = (XᵀX + λI)⁻¹, which makes diag(B) = 0 (an item may not
recommend itself); a user's scores are x_u·B. P is a dense items×items inverse: 8 bytes × N²
twice over (20,000 items: 6.4 GB), so larger catalogues are skipped with that reason.
"""
from __future__ import annotations

import numpy as np

from tuner.baselines.history import ColdUsers, user_items
from tuner.data.types import Split

NAME = "EASE"
MAX_ITEMS = 20_000
# MovieLens-100K's val picks 500 (random split), 250 (temporal), 100 (leave-last-out): inside the grid
GRID = tuple({"lambda": value} for value in (50, 100, 250, 500, 1000, 2000))
DEFAULT = {"lambda": 500}  # used when the split has no validation part to choose on


def skip_reason(num_items: int) -> str | None:
    if num_items > MAX_ITEMS:
        return f"{num_items:,} items > {MAX_ITEMS:,}: EASE needs a dense items×items inverse"
    return None


def item_weights(gram: np.ndarray, lam: float) -> np.ndarray:
    """B of the closed form, from the Gram matrix XᵀX (float64 [N, N]) and λ."""
    diagonal = np.diag_indices_from(gram)
    regularised = gram.copy()
    regularised[diagonal] += lam
    weights = np.linalg.inv(regularised)
    weights /= -np.diag(weights)[None, :]  # column j divided by -P_jj
    weights[diagonal] = 0.0
    return weights


class Model:
    """The Gram matrix is computed once; each λ of the grid costs one inverse. Users without
    training items get MostPopular's scores (their row of X is empty)."""

    def __init__(self, split: Split, seed: int):  # seed: unused, the closed form draws nothing
        self.user_items, self.cold = user_items(split), ColdUsers(split)
        self.gram = (self.user_items.T @ self.user_items).toarray().astype(np.float64)

    def fit(self, params: dict):
        weights = item_weights(self.gram, float(params["lambda"])).astype(np.float32)
        # the same scores for val and test: X holds training alone, as it did when λ was chosen
        return lambda users, part: self.cold.serve(np.asarray(self.user_items[users] @ weights, np.float32), users)
