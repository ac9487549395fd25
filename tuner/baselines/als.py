"""ALS for implicit feedback (Hu, Koren, Volinsky 2008) from the `implicit` library.

An optional extra, `tuner[baselines]`: without it the result says how to install it. Fitted on
the CPU, seeded, one BLAS thread (implicit's own threads parallelise over users; a threaded
BLAS inside them is what its warning is about). Confidence is α on every training pair.
"""
from __future__ import annotations

import numpy as np

from tuner.baselines.history import ColdUsers, user_items
from tuner.data.types import Split

NAME = "ALS"
INSTALL = "pip install 'tuner[baselines]'"
ITERATIONS = 15  # implicit's default
# MovieLens-100K's val picks 128/30/5 (random split), 64/10/1 (temporal), 128/10/1 (leave-last-out)
GRID = tuple({"factors": f, "regularization": r, "alpha": a}
             for f in (64, 128) for r in (3.0, 10.0, 30.0, 100.0) for a in (1.0, 5.0, 20.0))
DEFAULT = {"factors": 128, "regularization": 30.0, "alpha": 5.0}


def skip_reason(num_items: int) -> str | None:
    try:
        import implicit  # noqa: F401
    except ImportError:
        return f"the implicit library is not installed: {INSTALL}"
    return None


class Model:
    """One `implicit` fit per setting, from the same seed; scores are user · item factors. Users
    without training items get MostPopular's scores (their factors were never fitted)."""

    def __init__(self, split: Split, seed: int):
        self.user_items, self.cold, self.seed = user_items(split), ColdUsers(split), seed

    def fit(self, params: dict):
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(factors=int(params["factors"]),
                                            regularization=float(params["regularization"]),
                                            alpha=float(params["alpha"]), iterations=ITERATIONS,
                                            random_state=self.seed)
            model.fit(self.user_items, show_progress=False)
        users, items = np.asarray(model.user_factors), np.asarray(model.item_factors)
        return lambda rows, part: self.cold.serve(np.asarray(users[rows] @ items.T, np.float32), rows)
