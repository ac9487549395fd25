"""What a held-out part asks of a ranking: its distinct queries, their targets, and what each user has seen.

A model, MostPopular and every baseline are measured on the same `Queries`, built here once per
part, and ranked by `tuner.ranking`; the protocol is stated there. Also here: the cuts of a part
that the protocol knows, a seeded sample of its users (cheap per-epoch validation) and its cold
users (no training interaction). No TensorFlow: baselines and benchmarks use it without a model.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from tuner.config import DEFAULT_VAL_USERS
from tuner.data.types import Split
from tuner.errors import EvaluationError

PARTS = ("val", "test")


@dataclass
class Queries:
    """The distinct queries of one held-out part and what each metric looks up in their rankings.

    Identical queries (same user, and same history if any) are scored once: without history
    that is one row per user, however many items the user has held out. Every array of
    (row, item) pairs is sorted by row, so a chunk of rows is a slice of each.
    """

    user: np.ndarray  # [Q] user index of each query row
    history: np.ndarray | None  # [Q, L]
    row: np.ndarray  # [n] query row of each held-out interaction
    item: np.ndarray  # [n] that interaction's item
    num_users: int
    relevant_user: np.ndarray  # [R] 0..num_users-1, for each (user, distinct held-out item)
    relevant_row: np.ndarray  # [R] that user's query row (their earliest held-out interaction's)
    relevant_item: np.ndarray
    excluded_row: np.ndarray  # [X] (user's query row, item seen in earlier parts)
    excluded_item: np.ndarray


def queries_of(split: Split, part: str, ks: list[int]) -> Queries | None:
    """The queries of `split.<part>` ("val" or "test"), None if it is empty; bad `part`, `ks` or
    item indices are an EvaluationError."""
    if part not in PARTS:
        raise EvaluationError(f"part: {part!r} is not one of {', '.join(PARTS)}")
    if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
        raise EvaluationError(f"ks: {ks!r} must be a non-empty list of integers >= 1")
    held = getattr(split, part)
    if len(held) == 0:
        return None
    num_items = split.dataset.num_items
    if held.item.min() < 1 or held.item.max() > num_items:
        raise EvaluationError(f"split.{part}.item: indices must be in 1..{num_items} (0 is padding), "
                              f"got {held.item.min()}..{held.item.max()}")
    user = np.asarray(held.user, np.int64)
    if held.history is not None:
        keys = np.concatenate([user[:, None], np.asarray(held.history, np.int64)], axis=1)
        distinct, inverse = np.unique(keys, axis=0, return_inverse=True)
        q_user, q_history = distinct[:, 0], distinct[:, 1:].astype(np.int32)
    else:
        q_user, inverse = np.unique(user, return_inverse=True)
        q_history = None
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")

    users, first = np.unique(user, return_index=True)  # interactions are in time order
    by_row = np.argsort(inverse[first])  # number users in row order, so their pairs sort by row
    users, user_row = users[by_row], inverse[first][by_row]
    earlier = [split.train] if part == "val" else [split.train, split.val]
    position = np.full(1 + max([int(users.max())] + [int(e.user.max()) for e in earlier if len(e)]), -1, np.int64)
    position[users] = np.arange(len(users))

    def pairs(u, items):
        """Distinct (user number, item) pairs of the part's users, sorted by user number."""
        p, items = position[np.asarray(u, np.int64)], np.asarray(items, np.int64)
        keep = (p >= 0) & (items >= 1) & (items <= num_items)
        key = np.sort(p[keep] * (num_items + 1) + items[keep])
        key = key[np.r_[True, key[1:] != key[:-1]][:len(key)]]  # distinct: 27x faster than np.unique's hashing here
        return key // (num_items + 1), key % (num_items + 1)

    relevant_user, relevant_item = pairs(user, held.item)
    excluded_user, excluded_item = pairs(np.concatenate([e.user for e in earlier]),
                                         np.concatenate([e.item for e in earlier]))
    return Queries(q_user.astype(np.int32), q_history, inverse[order], np.asarray(held.item, np.int64)[order],
                   len(users), relevant_user, user_row[relevant_user], relevant_item,
                   user_row[excluded_user], excluded_item)


def sample_users(split: Split, part: str, size: int | None, seed: int) -> np.ndarray | None:
    """A seeded sample of `size` (None: DEFAULT_VAL_USERS) of the part's users, as sorted user
    indices, or None when the part has no more users than that (then all of them count)."""
    size = DEFAULT_VAL_USERS if size is None else size
    users = np.unique(getattr(split, part).user)
    if len(users) <= size:
        return None
    return np.sort(np.random.default_rng(seed).choice(users, size, replace=False))


def only_users(split: Split, part: str, users: np.ndarray | None) -> Split:
    """`split` with `split.<part>` cut down to the interactions of `users` (None: unchanged).
    The earlier parts stay whole: they only decide which items each user has seen."""
    if users is None:
        return split
    held = getattr(split, part)
    return replace(split, **{part: held.take(np.flatnonzero(np.isin(held.user, users)))})


def with_cold_users(measure: Callable[[Split], dict[str, float]], split: Split, part: str) -> dict[str, float]:
    """`measure(split)` (e.g. `lambda s: evaluate(model, s, "test", ks)`) plus, when `split.<part>`
    has cold users (no training interaction), `cold_users` (their number) and `cold_recall@K` /
    `cold_ndcg@K`, from `measure` rerun on the part cut down to their interactions (earlier parts
    kept, so the same items are excluded). A model never trained an id row for them, so they show
    how it handles cold start.
    """
    metrics = measure(split)
    held = getattr(split, part)
    cold = split.user_counts()[held.user] == 0
    if not metrics or not cold.any():
        return metrics
    only_cold = measure(replace(split, **{part: held.take(np.flatnonzero(cold))}))
    metrics["cold_users"] = int(len(np.unique(held.user[cold])))
    metrics.update({f"cold_{name}": value for name, value in only_cold.items() if name.startswith(("recall@", "ndcg@"))})
    return metrics
