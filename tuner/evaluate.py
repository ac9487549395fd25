"""Full-corpus top-K retrieval metrics, and the MostPopular baseline on the same protocol.

Every query is scored against every item (brute force, no approximate index), so the numbers
are exact and comparable across models. The score matrix is built a chunk of queries at a
time, sized from `memory_mb`, which keeps a 1M-item corpus within a fixed memory bound. The
model and MostPopular go through one ranking function, so the baseline cannot drift from the
protocol the model is judged by.

Protocol (see DESIGN.md):
- `hit_rate@K`: share of held-out interactions whose item is in the top K of the whole
  corpus for that interaction's query; nothing is excluded.
- `recall@K`, `ndcg@K` (RecBole): per user; the relevant set is the user's distinct held-out
  items; the items the user interacted with in earlier parts (train for val; train and val
  for test) are removed from the ranking, even when they are also held out, exactly as
  RecBole masks history items; binary gains, DCG discount log2(rank + 1), IDCG over
  min(|relevant|, K) positions; averaged over every user with a held-out interaction. The
  user's query is the one of their earliest held-out interaction.
Ties rank the lower item index first; index 0 (padding) is never ranked.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import tensorflow as tf

from tuner.data.types import Split
from tuner.errors import EvaluationError

PARTS = ("val", "test")
LOG_EVERY_S = 5.0  # at most one progress line per this many seconds
_BATCH = 8192  # rows per tower call when encoding queries and candidates
_NOT_FOUND = np.iinfo(np.int64).max  # position of an item outside the top K

Log = Callable[[str], None]
# Scores of query rows [start, end) against items 1..num_items: a float32 [end - start, num_items] tensor.
ScoreFn = Callable[[int, int], tf.Tensor]


def evaluate(model, split: Split, part: str, ks: list[int], memory_mb: float = 512,
             log: Log | None = None) -> dict[str, float]:
    """Metrics of a two-tower model (`query_tower`, `candidate_tower`) on `split.<part>`; {} if empty."""
    queries = _queries(split, part, ks)
    if queries is None:
        return {}
    num_items = split.dataset.num_items
    candidates = _encode(lambda s, e: model.candidate_tower(tf.range(s + 1, e + 1, dtype=tf.int32), training=False),
                         num_items)
    users = queries.user

    def encode_queries(s, e):
        features = {"user": tf.constant(users[s:e], tf.int32)}
        if queries.history is not None:
            features["history"] = tf.constant(queries.history[s:e], tf.int32)
        return model.query_tower(features, training=False)

    query_emb = _encode(encode_queries, len(users))
    return _rank(lambda s, e: tf.matmul(query_emb[s:e], candidates, transpose_b=True),
                 queries, num_items, ks, memory_mb, log, f"{part} (model)")


def most_popular(split: Split, part: str, ks: list[int], memory_mb: float = 512,
                 log: Log | None = None) -> dict[str, float]:
    """The same metrics for ranking every query by training counts; {} if the part is empty."""
    queries = _queries(split, part, ks)
    if queries is None:
        return {}
    num_items = split.dataset.num_items
    counts = tf.constant(split.item_counts()[1:num_items + 1].astype(np.float32)[None, :])
    return _rank(lambda s, e: tf.broadcast_to(counts, [e - s, num_items]),
                 queries, num_items, ks, memory_mb, log, f"{part} (MostPopular)")


def chunk_rows(num_items: int, memory_mb: float) -> int:
    """Queries per chunk so that a chunk's score matrix, rows * (num_items + 1) * 4 bytes, fits memory_mb MiB."""
    return max(1, int(memory_mb * 2**20) // ((num_items + 1) * 4))


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """Metrics side by side: `rows` maps a column name (e.g. "model", "MostPopular") to its metrics."""
    columns = list(rows)
    names = list(dict.fromkeys(name for metrics in rows.values() for name in metrics))
    cells = [["metric", *columns]]
    for name in names:
        cells.append([name, *(f"{rows[c][name]:.4f}" if name in rows[c] else "-" for c in columns)])
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))).rstrip()
        for line in cells)


# --- internals -----------------------------------------------------------------------------


@dataclass
class _Queries:
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


def _queries(split: Split, part: str, ks: list[int]) -> _Queries | None:
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
        key = np.unique(p[keep] * (num_items + 1) + items[keep])
        return key // (num_items + 1), key % (num_items + 1)

    relevant_user, relevant_item = pairs(user, held.item)
    excluded_user, excluded_item = pairs(np.concatenate([e.user for e in earlier]),
                                         np.concatenate([e.item for e in earlier]))
    return _Queries(q_user.astype(np.int32), q_history, inverse[order], np.asarray(held.item, np.int64)[order],
                    len(users), relevant_user, user_row[relevant_user], relevant_item,
                    user_row[excluded_user], excluded_item)


def _encode(tower: Callable[[int, int], tf.Tensor], n: int) -> tf.Tensor:
    """Rows 0..n-1 of a tower's output, computed in batches; `tower(start, end)` encodes one batch."""
    return tf.concat([tf.cast(tower(s, min(s + _BATCH, n)), tf.float32) for s in range(0, n, _BATCH)], axis=0)


def _rank(scores: ScoreFn, q: _Queries, num_items: int, ks: list[int], memory_mb: float,
          log: Log | None, label: str) -> dict[str, float]:
    """Ranks every query row against the whole corpus, chunk by chunk, and returns the metrics.

    One top K per chunk serves both protocols: the users' earlier items are set to -inf
    (recall, ndcg read that ranking directly), and an interaction's rank in the unmasked
    ranking (hit_rate) is the number of unmasked items ahead of it, read from the top K, plus
    the number of its user's masked items ahead of it, from their scores kept aside.
    """
    kmax = min(max(ks), num_items)
    num_rows, chunk = len(q.user), chunk_rows(num_items, memory_mb)
    num_chunks = -(-num_rows // chunk)
    hit_pos = np.full(len(q.item), _NOT_FOUND, np.int64)
    relevant_pos = np.full(len(q.relevant_item), _NOT_FOUND, np.int64)
    started = last_log = time.monotonic()
    for number, start in enumerate(range(0, num_rows, chunk), 1):
        end = min(start + chunk, num_rows)
        lo, hi = np.searchsorted(q.row, [start, end])
        xlo, xhi = np.searchsorted(q.excluded_row, [start, end])
        rlo, rhi = np.searchsorted(q.relevant_row, [start, end])
        rows, items = q.row[lo:hi] - start, q.item[lo:hi]
        x_rows, x_items = q.excluded_row[xlo:xhi] - start, q.excluded_item[xlo:xhi]

        matrix = scores(start, end)
        target = tf.gather_nd(matrix, np.stack([rows, items - 1], axis=1)).numpy()
        x_index = np.stack([x_rows, x_items - 1], axis=1)
        x_scores = tf.gather_nd(matrix, x_index).numpy()
        if xhi > xlo:
            matrix = tf.tensor_scatter_nd_update(matrix, x_index, tf.fill([xhi - xlo], -np.inf))
        top_items, top_values = _top_k(matrix, kmax)
        del matrix

        ahead = _ahead_in_top(top_items[rows], top_values[rows], items, target)
        ahead += _ahead_among(rows, items, target, x_rows, x_items, x_scores)
        hit_pos[lo:hi] = np.where(ahead < kmax, ahead, _NOT_FOUND)
        relevant_pos[rlo:rhi] = _positions(top_items, q.relevant_row[rlo:rhi] - start, q.relevant_item[rlo:rhi])

        now = time.monotonic()
        if log is not None and now - last_log >= LOG_EVERY_S:
            last_log = now
            log(f"evaluating {label}: chunk {number}/{num_chunks} ({end}/{num_rows} queries x "
                f"{num_items} items, {chunk} per chunk), {now - started:.1f} s")
    return _metrics(hit_pos, relevant_pos, q.relevant_user, q.num_users, ks)


def _top_k(matrix: tf.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Items (1-based) and scores of each row's top k, lower index first on ties; item 0 where masked."""
    values, index = tf.math.top_k(matrix, k=k, sorted=True)
    items, values = index.numpy().astype(np.int64) + 1, values.numpy()
    items[np.isneginf(values)] = 0  # masked items are not recommended, even when k exceeds the rest
    return items, values


def _outranks(score_a, item_a, score_b, item_b):
    """Whether a ranks ahead of b: a higher score, or the same score and a lower index (as top_k orders)."""
    return (score_a > score_b) | ((score_a == score_b) & (item_a < item_b))


def _ahead_in_top(top_items, top_values, items, target) -> np.ndarray:
    """How many of each row's top-k items rank ahead of its target: the number of unmasked
    items ahead of it when that is < k (if it is k, the target is outside the top k anyway)."""
    return _outranks(top_values, top_items, target[:, None], items[:, None]).sum(axis=1)


def _ahead_among(rows, items, target, x_rows, x_items, x_scores) -> np.ndarray:
    """How many of the masked items of each target's row rank ahead of it (one sort, no pairs)."""
    n = len(rows)
    if len(x_rows) == 0:
        return np.zeros(n, np.int64)
    is_masked = np.r_[np.zeros(n, np.int64), np.ones(len(x_rows), np.int64)]
    score = np.r_[target, x_scores].astype(np.float64)
    # by row, then rank order; a target before its own item when that item is also masked
    order = np.lexsort((is_masked, np.r_[items, x_items], -score, np.r_[rows, x_rows]))
    masked_before = np.empty_like(is_masked)
    masked_before[order] = np.cumsum(is_masked[order]) - is_masked[order]
    return masked_before[:n] - np.searchsorted(x_rows, rows)  # minus those of earlier rows


def _positions(top: np.ndarray, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    """0-based rank of items[j] in top[rows[j]], or _NOT_FOUND."""
    match = top[rows] == items[:, None]
    return np.where(match.any(axis=1), match.argmax(axis=1), _NOT_FOUND)


def _metrics(hit_pos, relevant_pos, relevant_user, num_users: int, ks: list[int]) -> dict[str, float]:
    num_relevant = np.bincount(relevant_user, minlength=num_users)
    discount = 1.0 / np.log2(np.arange(max(ks)) + 2.0)
    ideal = np.concatenate([[0.0], np.cumsum(discount)])
    hit_rate, recall, ndcg = {}, {}, {}
    for k in dict.fromkeys(ks):
        hit_rate[f"hit_rate@{k}"] = float(np.mean(hit_pos < k))
        in_top = relevant_pos < k
        gain = np.where(in_top, 1.0 / np.log2(np.where(in_top, relevant_pos, 0) + 2.0), 0.0)
        hits = np.bincount(relevant_user, weights=in_top.astype(np.float64), minlength=num_users)
        dcg = np.bincount(relevant_user, weights=gain, minlength=num_users)
        recall[f"recall@{k}"] = float(np.mean(hits / num_relevant))
        ndcg[f"ndcg@{k}"] = float(np.mean(dcg / ideal[np.minimum(num_relevant, k)]))
    return {**hit_rate, **recall, **ndcg}
