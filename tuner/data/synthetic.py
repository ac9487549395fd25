"""A seeded synthetic log with known structure, for tests and scale checks.

Item popularity follows a power law (Zipf with `popularity_exponent`), so logQ correction and
MostPopular have something to act on; each user prefers one of `num_clusters` item clusters,
so a retrieval model has something to learn beyond popularity. Every user and every item
occurs at least once (when `num_interactions` allows), so the corpus has the configured size.
Everything is vectorised numpy: 1M items and 10M interactions take well under a minute.
"""
from __future__ import annotations

import numpy as np

from tuner.data.files import assemble
from tuner.data.types import Dataset, Feature

IN_CLUSTER = 0.8  # share of a user's interactions drawn from their preferred cluster
START = 1_600_000_000  # Unix seconds of the first interaction


def _draw(rng, cum: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Positions i with probability ∝ weight within [lo, hi) of the cumulative weights `cum`."""
    base = np.where(lo > 0, cum[np.maximum(lo - 1, 0)], 0.0)
    top = cum[hi - 1]
    pos = np.searchsorted(cum, base + rng.random(len(lo)) * (top - base), side="right")
    return np.clip(pos, lo, hi - 1)


def generate(cfg, seed: int = 42) -> Dataset:
    rng = np.random.default_rng(seed)
    n_users, n_items, n, k = cfg.num_users, cfg.num_items, cfg.num_interactions, cfg.num_clusters

    # Items: a cluster each, and a popularity rank in random order (rank 1 is the most popular).
    item_cluster = rng.integers(0, k, n_items)
    popularity = (rng.permutation(n_items) + 1.0) ** -cfg.popularity_exponent
    by_cluster = np.argsort(item_cluster, kind="stable")  # items grouped by cluster
    cum = np.cumsum(popularity[by_cluster])
    bounds = np.searchsorted(item_cluster[by_cluster], np.arange(k + 1))  # cluster c: [bounds[c], bounds[c+1])
    everything = (np.zeros(1, np.int64), np.full(1, n_items))

    # Users: a preferred cluster each (their `segment`) and a lognormal activity level.
    user_cluster = rng.integers(0, k, n_users)
    activity = np.cumsum(rng.lognormal(0.0, 1.0, n_users))
    user = np.searchsorted(activity, rng.random(n) * activity[-1], side="right").astype(np.int64)
    # Coverage: the first rows name every user once; the next name every item once, each with
    # a user of that item's cluster where the cluster has one.
    n_cover_users = min(n_users, n)
    user[:n_cover_users] = rng.permutation(n_users)[:n_cover_users]
    n_cover_items = min(n_items, n - n_cover_users)
    cover_items = rng.permutation(n_items)[:n_cover_items]
    users_by_cluster = np.argsort(user_cluster, kind="stable")
    ustart = np.searchsorted(user_cluster[users_by_cluster], np.arange(k + 1))
    c = item_cluster[cover_items]
    size = ustart[c + 1] - ustart[c]
    pick = users_by_cluster[np.minimum(ustart[c] + (rng.random(len(c)) * size).astype(np.int64), n_users - 1)]
    cover_slice = slice(n_cover_users, n_cover_users + n_cover_items)
    user[cover_slice] = np.where(size > 0, pick, rng.integers(0, n_users, len(c)))

    # Items for the other rows: the user's cluster with probability IN_CLUSTER, else any item,
    # popularity-weighted either way.
    own = rng.random(n) < IN_CLUSTER
    uc = user_cluster[user]
    lo = np.where(own, bounds[uc], everything[0])
    hi = np.where(own, bounds[uc + 1], everything[1])
    empty = lo >= hi  # a cluster no item fell into
    lo, hi = np.where(empty, 0, lo), np.where(empty, n_items, hi)
    item = by_cluster[_draw(rng, cum, lo, hi)]
    item[cover_slice] = cover_items

    # Spread the coverage rows through time; timestamps rise, with some ties.
    order = rng.permutation(n)
    user, item = user[order], item[order]
    timestamp = START + np.cumsum(rng.integers(0, 60, n))

    ds = assemble("synthetic", user, item, timestamp)
    raw_user = ds.user_ids[1:].astype(np.int64)
    raw_item = ds.item_ids[1:].astype(np.int64)
    ds.user_features = {"segment": Feature(np.concatenate([[0], user_cluster[raw_user] + 1]).astype(np.int32), k + 1)}
    ds.item_features = {"cluster": Feature(np.concatenate([[0], item_cluster[raw_item] + 1]).astype(np.int32), k + 1)}
    return ds
