"""What the users did before a held-out part, in the forms the baselines read.

Time is the interactions' timestamp; data without timestamps carries its rows' order there
(`tuner.data.files.assemble`), which the splits and histories read as time too. Equal
timestamps keep the data's order.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from tuner.data.types import Interactions, Split


def user_items(split: Split) -> sp.csr_matrix:
    """Binary [num_users + 1, num_items] training matrix: row = user index, column j = item j + 1."""
    train = split.train
    shape = (split.dataset.num_users + 1, split.dataset.num_items)
    matrix = sp.csr_matrix((np.ones(len(train), np.float32), (train.user, train.item - 1)), shape=shape)
    matrix.data[:] = 1.0  # repeated pairs count once
    return matrix


def before(split: Split, part: str) -> Interactions:
    """The interactions that precede `part` in the protocol: train for val; train and val for test
    (the parts whose items the ranking excludes as seen, and a history feature reads)."""
    if part == "val" or not len(split.val):
        return split.train
    train, val = split.train, split.val
    return Interactions(*(np.concatenate([getattr(train, name), getattr(val, name)])
                          for name in ("user", "item", "timestamp", "weight")))


def in_time_order(interactions: Interactions) -> np.ndarray:
    """Indices that sort `interactions` by timestamp, equal timestamps in their given order."""
    return np.argsort(interactions.timestamp, kind="stable")


def by_user_in_time_order(interactions: Interactions) -> np.ndarray:
    """Indices that sort `interactions` by user, then timestamp, then their given order."""
    return np.lexsort((np.arange(len(interactions)), interactions.timestamp, interactions.user))


def recent_counts(split: Split, fraction: float) -> np.ndarray:
    """float64 [num_items]: each item's interactions among the last ⌈fraction·n⌉ of the n training
    interactions in time order (at least one), plus a tie-break below 1 by its count over all of
    training, so that items the window misses still rank by popularity. fraction 1 ranks as MostPopular."""
    train = split.train
    num_items = split.dataset.num_items
    keep = max(1, int(np.ceil(fraction * len(train))))
    recent = train.item[in_time_order(train)[len(train) - keep:]]
    overall = np.bincount(train.item - 1, minlength=num_items).astype(np.float64)
    return np.bincount(recent - 1, minlength=num_items) + overall / (overall.max() + 1.0)


def last_items(interactions: Interactions, num_users: int, num_items: int, window: int) -> sp.csr_matrix:
    """[num_users + 1, num_items]: row u weighs user u's `window` most recent items 1, 1/2, 1/3, ...
    (the most recent first; an item met twice adds up); a user with no interaction has an empty row."""
    order = by_user_in_time_order(interactions)
    user, item = interactions.user[order], interactions.item[order]
    is_last = np.r_[user[1:] != user[:-1], True]
    ends = np.flatnonzero(is_last)
    from_end = ends[np.searchsorted(ends, np.arange(len(user)))] - np.arange(len(user))  # 0 = the user's last
    keep = from_end < window
    return sp.csr_matrix((1.0 / (from_end[keep] + 1.0), (user[keep], item[keep] - 1)),
                         shape=(num_users + 1, num_items))


def followers(interactions: Interactions, num_items: int) -> sp.csr_matrix:
    """[num_items, num_items]: entry (a, b) counts how often a user's next interaction after item a
    was item b (items 1-based, rows and columns 0-based)."""
    order = by_user_in_time_order(interactions)
    user, item = interactions.user[order], interactions.item[order]
    same_user = user[1:] == user[:-1]
    counts = sp.csr_matrix((np.ones(int(same_user.sum())), (item[:-1][same_user] - 1, item[1:][same_user] - 1)),
                           shape=(num_items, num_items))
    counts.sum_duplicates()
    return counts


class ColdUsers:
    """Users with no training interaction, and the MostPopular scores (training counts) they get
    from a baseline whose own scores say nothing about them, as a deployed recommender would serve them."""

    def __init__(self, split: Split):
        self.cold = split.user_counts() == 0
        self.popular = split.item_counts()[1:split.dataset.num_items + 1].astype(np.float32)

    def serve(self, scores: np.ndarray, users: np.ndarray) -> np.ndarray:
        """`scores` [len(users), num_items] (float32, written in place) with the cold users' rows replaced."""
        scores[self.cold[users]] = self.popular
        return scores
