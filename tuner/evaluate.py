"""Full-corpus top-K retrieval metrics, and the MostPopular baseline on the same protocol.

Every query is scored against every item (brute force, no approximate index), so the numbers
are exact and comparable across models. Queries are ranked a chunk at a time, chunks in
parallel threads; a model's (and MostPopular's) scores are never materialised as whole rows:
`tuner.topk` ranks them a cache-sized tile of items at a time. `memory_mb` bounds the chunk's
score matrix of a scorer that has one (a baseline's dense scores).
The model, MostPopular and the baselines go through one ranking function, so a baseline cannot
drift from the protocol the model is judged by.

Protocol (docs/design.md, "Metrics"):
- `hit_rate@K`: share of held-out interactions whose item is in the top K of the whole
  corpus for that interaction's query; nothing is excluded.
- `recall@K`, `ndcg@K` (RecBole): per user; the relevant set is the user's distinct held-out
  items; the items the user interacted with in earlier parts (train for val; train and val
  for test) are removed from the ranking, even when they are also held out, exactly as
  RecBole masks history items; binary gains, DCG discount log2(rank + 1), IDCG over
  min(|relevant|, K) positions; averaged over every user with a held-out interaction. The
  user's query is the one of their earliest held-out interaction.
- `cold_users`, `cold_recall@K`, `cold_ndcg@K` (`with_cold_users`, when there are any): the
  number of the part's users without a training interaction, and recall/ndcg over them alone.
Ranking: score descending; equal scores rank the lower item index first (as the stable
`tf.math.top_k` does, checked by test); -0.0 equals 0.0; NaN scores are an EvaluationError.
Index 0 (padding) is never ranked. `users` restricts a part to a sample of its users
(`sample_users`: the cheap per-epoch validation).
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import tensorflow as tf

from tuner import topk
from tuner.config import DEFAULT_VAL_USERS
from tuner.data.types import Split
from tuner.errors import EvaluationError

PARTS = ("val", "test")
LOG_EVERY_S = 5.0  # at most one progress line per this many seconds
_BATCH = 131072  # rows per tower call when encoding (1M id-only candidates: 84 ms in 32,768s, 61 ms; a
# tower whose layers sum to 512 wide holds 256 MB of activations)
_NOT_FOUND = np.iinfo(np.int64).max  # position of an item outside the top K
_CHUNK_ROWS = 256  # query rows ranked together at most: a tile holds 1 MB of scores whatever the rows

Log = Callable[[str], None]
# Scores of query rows [start, end) against items 1..num_items: a [end - start, num_items] tensor or array.
ScoreFn = Callable[[int, int], tf.Tensor]
# Scores that every query row gives items 1..num_items alike: [num_items] (MostPopular's counts).
SharedScores = np.ndarray


@dataclass(frozen=True)
class Embeddings:
    """Scores as a product, ranked without materialising score rows: query row q scores item i
    (1-based) with `queries[q] · v_i`, the items' vectors in `tuner.topk`'s tile layout."""

    queries: np.ndarray  # [number of query rows, d]
    items: np.ndarray  # [whole tiles, d]: row p holds v_i for i = topk.tile_order(num_items, tile)[p] + 1
    tile: int


def evaluate(model, split: Split, part: str, ks: list[int], memory_mb: float = 512,
             log: Log | None = None, users: np.ndarray | None = None) -> dict[str, float]:
    """Metrics of a two-tower model (`query_tower`, `candidate_tower`) on `split.<part>`, or on
    its interactions of `users` alone; {} if empty."""
    split = only_users(split, part, users)
    queries = _queries(split, part, ks)
    if queries is None:
        return {}
    num_items = split.dataset.num_items
    users = queries.user
    # the candidates are encoded in the order the ranking reads them: no copy of the table (33 ms at 1M items)
    tile = topk.tile_items(_chunks(len(users), _CHUNK_ROWS, _cores())[0], num_items)
    order = topk.tile_order(num_items, tile) + 1
    candidates = _encode(lambda s, e: model.candidate_tower(tf.constant(order[s:e], tf.int32), training=False),
                         len(order))

    def encode_queries(s, e):
        features = {"user": tf.constant(users[s:e], tf.int32)}
        if queries.history is not None:
            features["history"] = tf.constant(queries.history[s:e], tf.int32)
        return model.query_tower(features, training=False)

    # np.asarray shares the tensors' memory (.numpy() copies: 33 ms for 1M x 32)
    embeddings = Embeddings(np.asarray(_encode(encode_queries, len(users))), np.asarray(candidates), tile)
    return _rank(embeddings, queries, num_items, ks, memory_mb, log, f"{part} (model)")


def most_popular(split: Split, part: str, ks: list[int], memory_mb: float = 512,
                 log: Log | None = None, users: np.ndarray | None = None) -> dict[str, float]:
    """The same metrics for ranking every query by training counts; {} if the part is empty."""
    split = only_users(split, part, users)
    queries = _queries(split, part, ks)
    if queries is None:
        return {}
    num_items = split.dataset.num_items
    counts = split.item_counts()[1:num_items + 1].astype(np.float32)
    return _rank(counts, queries, num_items, ks, memory_mb, log, f"{part} (MostPopular)")


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


def chunk_rows(num_items: int, memory_mb: float) -> int:
    """Queries per chunk so that a chunk's score matrix, rows * (num_items + 1) * 4 bytes, fits memory_mb MiB."""
    return max(1, int(memory_mb * 2**20) // ((num_items + 1) * 4))


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """Metrics side by side: `rows` maps a column name (e.g. "model", "MostPopular") to its metrics."""
    columns = list(rows)
    names = list(dict.fromkeys(name for metrics in rows.values() for name in metrics))
    cells = [["metric", *columns]]
    for name in names:
        cells.append([name, *(_cell(rows[c][name]) if name in rows[c] else "-" for c in columns)])
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))).rstrip()
        for line in cells)


# --- internals -----------------------------------------------------------------------------


def _cell(value) -> str:
    """Counts (cold_users) as integers, metrics to 4 decimals."""
    return str(value) if isinstance(value, (int, np.integer)) else f"{value:.4f}"


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
        key = np.sort(p[keep] * (num_items + 1) + items[keep])
        key = key[np.r_[True, key[1:] != key[:-1]][:len(key)]]  # distinct: 27x faster than np.unique's hashing here
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


def _rank(scores: ScoreFn | Embeddings | SharedScores, q: _Queries, num_items: int, ks: list[int], memory_mb: float,
          log: Log | None, label: str) -> dict[str, float]:
    """Ranks every query row against the whole corpus, chunk by chunk, and returns the metrics.

    `scores`: Embeddings, SharedScores, or a ScoreFn giving a chunk's score matrix. One top K per chunk
    serves both protocols: the users' earlier items are masked to -inf (recall, ndcg read that
    ranking directly), and an interaction's rank in the unmasked ranking (hit_rate) is the
    number of unmasked items ahead of it, read from the top K, plus the number of its user's
    masked items ahead of it, from their unmasked scores looked up on the way.
    """
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    kmax = min(max(ks), num_items)
    cores = _cores()
    num_rows = len(q.user)
    factored = isinstance(scores, (Embeddings, np.ndarray))
    # With factors a chunk's scores exist only a tile at a time, so memory_mb bounds nothing there;
    # a dense ScoreFn materialises the chunk's whole score matrix.
    limit = _CHUNK_ROWS if factored else min(_CHUNK_ROWS, chunk_rows(num_items, memory_mb))
    chunk, num_chunks = _chunks(num_rows, limit, cores)
    tile = scores.tile if isinstance(scores, Embeddings) else topk.tile_items(chunk, num_items)
    if isinstance(scores, Embeddings):
        product = topk.DotScores(scores.queries, scores.items, tile)
    elif isinstance(scores, np.ndarray):
        product = topk.SharedScores(scores, num_rows, tile)
    else:
        product = None
    hit_pos = np.full(len(q.item), _NOT_FOUND, np.int64)
    relevant_pos = np.full(len(q.relevant_item), _NOT_FOUND, np.int64)

    def rank_chunk(start):
        end = min(start + chunk, num_rows)
        c = _chunk(q, start, end)
        source = product.rows(start, end) if product else topk.DenseScores(np.asarray(scores(start, end)), tile)
        top = topk.rank(source, end - start, num_items, kmax, masked=(c.x_rows, c.x_items),
                        lookup=(np.r_[c.rows, c.x_rows], np.r_[c.items, c.x_items]))
        n = len(c.rows)
        _record(c, top.items, top.values, top.looked_up[:n], top.looked_up[n:], kmax, hit_pos, relevant_pos)
        return end

    # one chunk per core, each with a one-thread BLAS: measured faster than one chunk at a time
    # with a multi-threaded BLAS, and it degrades gently when other processes share the cores
    workers = min(cores, num_chunks)
    started = last_log = time.monotonic()
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        for number, end in enumerate(pool.map(rank_chunk, range(0, num_rows, chunk)), 1):
            now = time.monotonic()
            if log is not None and now - last_log >= LOG_EVERY_S:
                last_log = now
                log(f"evaluating {label}: chunk {number}/{num_chunks} ({end}/{num_rows} queries x "
                    f"{num_items} items, {chunk} per chunk), {now - started:.1f} s")
    return _metrics(hit_pos, relevant_pos, q.relevant_user, q.num_users, ks)


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def _chunks(num_rows: int, limit: int, cores: int) -> tuple[int, int]:
    """Rows per chunk (at most `limit`) and the number of chunks: as many chunks as a multiple of
    the cores, of equal rows, so that no core ranks one chunk more than another (the last of
    9 chunks of 256 rows left a core idle for a ninth of the time); whole multiples of 16 rows,
    the width of the BLAS kernels (128 rows ran 8% faster than 134)."""
    num_chunks = cores * -(-num_rows // (cores * limit))
    chunk = -(-num_rows // num_chunks)
    chunk = min(limit, -(-chunk // 16) * 16) if chunk > 16 else chunk
    return chunk, -(-num_rows // chunk)


@dataclass
class _Chunk:
    """The (row, item) pairs of query rows [start, end) that a chunk's ranking answers; rows count from start."""

    held: slice  # of _Queries.row / item: the held-out interactions (hit_rate)
    rows: np.ndarray
    items: np.ndarray
    x_rows: np.ndarray  # the items seen in earlier parts, masked
    x_items: np.ndarray
    relevant: slice  # of _Queries.relevant_*: the users' distinct held-out items (recall, ndcg)
    relevant_rows: np.ndarray
    relevant_items: np.ndarray


def _chunk(q: _Queries, start: int, end: int) -> _Chunk:
    lo, hi = np.searchsorted(q.row, [start, end])
    xlo, xhi = np.searchsorted(q.excluded_row, [start, end])
    rlo, rhi = np.searchsorted(q.relevant_row, [start, end])
    return _Chunk(slice(lo, hi), q.row[lo:hi] - start, q.item[lo:hi], q.excluded_row[xlo:xhi] - start,
                  q.excluded_item[xlo:xhi], slice(rlo, rhi), q.relevant_row[rlo:rhi] - start, q.relevant_item[rlo:rhi])


def _record(c: _Chunk, top_items, top_values, target, x_scores, kmax: int, hit_pos, relevant_pos) -> None:
    """Where each held-out interaction ranks unmasked (hit_pos) and each relevant item masked (relevant_pos),
    from a chunk's top k (items 0 where masked), its targets' scores and its masked items' scores."""
    ahead = _ahead_in_top(top_items[c.rows], top_values[c.rows], c.items, target)
    ahead += _ahead_among(c.rows, c.items, target, c.x_rows, c.x_items, x_scores)
    hit_pos[c.held] = np.where(ahead < kmax, ahead, _NOT_FOUND)
    relevant_pos[c.relevant] = _positions(top_items, c.relevant_rows, c.relevant_items)


def _outranks(score_a, item_a, score_b, item_b):
    """Whether a ranks ahead of b: a higher score, or the same score and a lower index (the ranking's tie rule)."""
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
