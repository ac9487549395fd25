"""Full-corpus top-K metrics of a held-out part: the one ranking that a model, MostPopular and
every baseline go through, so that no scorer can drift from the protocol the model is judged by.

Every query is scored against every item (brute force, no approximate index), so the numbers
are exact and comparable across scorers. Queries are ranked a chunk at a time, chunks in
parallel threads; scores given as factors (`Embeddings`, `SharedScores`) are never materialised
as whole rows: `tuner.topk` ranks them a cache-sized tile of items at a time. `memory_mb` bounds
the chunk's score matrix of a `ScoreFn` (a baseline's dense scores).

Protocol (`tuner.heldout.Queries` holds what it needs):
- `hit_rate@K`: share of held-out interactions whose item is in the top K of the whole
  corpus for that interaction's query; nothing is excluded.
- `recall@K`, `ndcg@K` (RecBole): per user; the relevant set is the user's distinct held-out
  items; the items the user interacted with in earlier parts (train for val; train and val
  for test) are removed from the ranking, even when they are also held out, exactly as
  RecBole masks history items; binary gains, DCG discount log2(rank + 1), IDCG over
  min(|relevant|, K) positions; averaged over every user with a held-out interaction. The
  user's query is the one of their earliest held-out interaction.
Ranking: score descending; equal scores rank the lower item index first (as the stable
`tf.math.top_k` does, checked by test); -0.0 equals 0.0; NaN scores are an EvaluationError.
Index 0 (padding) is never ranked.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tuner import topk
from tuner.heldout import Queries

LOG_EVERY_S = 5.0  # at most one progress line per this many seconds
CHUNK_ROWS = 256  # query rows ranked together at most: a tile holds 1 MB of scores whatever the rows
NOT_FOUND = np.iinfo(np.int64).max  # position of an item outside the top K

Log = Callable[[str], None]
# Scores of query rows [start, end) against items 1..num_items: a [end - start, num_items] array
# (or anything np.asarray turns into one, such as a tensor).
ScoreFn = Callable[[int, int], np.ndarray]
# Scores that every query row gives items 1..num_items alike: [num_items] (MostPopular's counts).
SharedScores = np.ndarray


@dataclass(frozen=True)
class Embeddings:
    """Scores as a product, ranked without materialising score rows: query row q scores item i
    (1-based) with `queries[q] · v_i`, the items' vectors in `tuner.topk`'s tile layout."""

    queries: np.ndarray  # [number of query rows, d]
    items: np.ndarray  # [whole tiles, d]: row p holds v_i for i = topk.tile_order(num_items, tile)[p] + 1
    tile: int


def factored_tile(num_rows: int, num_items: int) -> int:
    """Items per tile that `rank` uses for factored scores of `num_rows` query rows: the tile
    `Embeddings.items` must be laid out in (`topk.tile_order(num_items, tile)`)."""
    return topk.tile_items(chunks(num_rows, CHUNK_ROWS, cores())[0], num_items)


def rank(scores: ScoreFn | Embeddings | SharedScores, q: Queries, num_items: int, ks: list[int],
         memory_mb: float = 512, log: Log | None = None, label: str = "") -> dict[str, float]:
    """Ranks every query row of `q` against items 1..num_items, chunk by chunk, and returns
    `hit_rate@K`, `recall@K`, `ndcg@K` for each K of `ks`.

    `scores`: Embeddings, SharedScores, or a ScoreFn giving a chunk's score matrix (called from
    several threads at once). One top K per chunk serves both protocols: the users' earlier items
    are masked to -inf (recall, ndcg read that ranking directly), and an interaction's rank in the
    unmasked ranking (hit_rate) is the number of unmasked items ahead of it, read from the top K,
    plus the number of its user's masked items ahead of it, from their unmasked scores looked up
    on the way. `log` gets a progress line naming `label` every LOG_EVERY_S seconds.
    """
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    kmax = min(max(ks), num_items)
    num_rows = len(q.user)
    factored = isinstance(scores, (Embeddings, np.ndarray))
    # With factors a chunk's scores exist only a tile at a time, so memory_mb bounds nothing there;
    # a dense ScoreFn materialises the chunk's whole score matrix.
    limit = CHUNK_ROWS if factored else min(CHUNK_ROWS, chunk_rows(num_items, memory_mb))
    num_cores = cores()
    chunk, num_chunks = chunks(num_rows, limit, num_cores)
    tile = scores.tile if isinstance(scores, Embeddings) else topk.tile_items(chunk, num_items)
    if isinstance(scores, Embeddings):
        product = topk.DotScores(scores.queries, scores.items, tile)
    elif isinstance(scores, np.ndarray):
        product = topk.SharedScores(scores, num_rows, tile)
    else:
        product = None
    hit_pos = np.full(len(q.item), NOT_FOUND, np.int64)
    relevant_pos = np.full(len(q.relevant_item), NOT_FOUND, np.int64)

    def rank_chunk(start):
        end = min(start + chunk, num_rows)
        c = chunk_pairs(q, start, end)
        source = product.rows(start, end) if product else topk.DenseScores(np.asarray(scores(start, end)), tile)
        top = topk.rank(source, end - start, num_items, kmax, masked=(c.x_rows, c.x_items),
                        lookup=(np.r_[c.rows, c.x_rows], np.r_[c.items, c.x_items]))
        n = len(c.rows)
        record_positions(c, top.items, top.values, top.looked_up[:n], top.looked_up[n:], kmax, hit_pos, relevant_pos)
        return end

    # one chunk per core, each with a one-thread BLAS: measured faster than one chunk at a time
    # with a multi-threaded BLAS, and it degrades gently when other processes share the cores
    workers = min(num_cores, num_chunks)
    started = last_log = time.monotonic()
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        for number, end in enumerate(pool.map(rank_chunk, range(0, num_rows, chunk)), 1):
            now = time.monotonic()
            if log is not None and now - last_log >= LOG_EVERY_S:
                last_log = now
                log(f"evaluating {label}: chunk {number}/{num_chunks} ({end}/{num_rows} queries x "
                    f"{num_items} items, {chunk} per chunk), {now - started:.1f} s")
    return metrics_from_positions(hit_pos, relevant_pos, q.relevant_user, q.num_users, ks)


def chunk_rows(num_items: int, memory_mb: float) -> int:
    """Queries per chunk so that a chunk's score matrix, rows * (num_items + 1) * 4 bytes, fits memory_mb MiB."""
    return max(1, int(memory_mb * 2**20) // ((num_items + 1) * 4))


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0))


def chunks(num_rows: int, limit: int, cores: int) -> tuple[int, int]:
    """Rows per chunk (at most `limit`) and the number of chunks: as many chunks as a multiple of
    the cores, of equal rows, so that no core ranks one chunk more than another (the last of
    9 chunks of 256 rows left a core idle for a ninth of the time); whole multiples of 16 rows,
    the width of the BLAS kernels (128 rows ran 8% faster than 134)."""
    num_chunks = cores * -(-num_rows // (cores * limit))
    chunk = -(-num_rows // num_chunks)
    chunk = min(limit, -(-chunk // 16) * 16) if chunk > 16 else chunk
    return chunk, -(-num_rows // chunk)


@dataclass
class Chunk:
    """The (row, item) pairs of query rows [start, end) that a chunk's ranking answers; rows count from start."""

    held: slice  # of Queries.row / item: the held-out interactions (hit_rate)
    rows: np.ndarray
    items: np.ndarray
    x_rows: np.ndarray  # the items seen in earlier parts, masked
    x_items: np.ndarray
    relevant: slice  # of Queries.relevant_*: the users' distinct held-out items (recall, ndcg)
    relevant_rows: np.ndarray
    relevant_items: np.ndarray


def chunk_pairs(q: Queries, start: int, end: int) -> Chunk:
    """The pairs of query rows [start, end): slices of `q`'s arrays, which are sorted by row."""
    lo, hi = np.searchsorted(q.row, [start, end])
    xlo, xhi = np.searchsorted(q.excluded_row, [start, end])
    rlo, rhi = np.searchsorted(q.relevant_row, [start, end])
    return Chunk(slice(lo, hi), q.row[lo:hi] - start, q.item[lo:hi], q.excluded_row[xlo:xhi] - start,
                 q.excluded_item[xlo:xhi], slice(rlo, rhi), q.relevant_row[rlo:rhi] - start, q.relevant_item[rlo:rhi])


def record_positions(c: Chunk, top_items, top_values, target, x_scores, kmax: int, hit_pos, relevant_pos) -> None:
    """Where each held-out interaction ranks unmasked (hit_pos) and each relevant item masked (relevant_pos),
    from a chunk's top k (items 0 where masked), its targets' scores and its masked items' scores."""
    ahead = _ahead_in_top(top_items[c.rows], top_values[c.rows], c.items, target)
    ahead += _ahead_among(c.rows, c.items, target, c.x_rows, c.x_items, x_scores)
    hit_pos[c.held] = np.where(ahead < kmax, ahead, NOT_FOUND)
    relevant_pos[c.relevant] = _positions(top_items, c.relevant_rows, c.relevant_items)


def metrics_from_positions(hit_pos, relevant_pos, relevant_user, num_users: int, ks: list[int]) -> dict[str, float]:
    """hit_rate@K, recall@K and ndcg@K from 0-based positions (NOT_FOUND outside the top K)."""
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
    """0-based rank of items[j] in top[rows[j]], or NOT_FOUND."""
    match = top[rows] == items[:, None]
    return np.where(match.any(axis=1), match.argmax(axis=1), NOT_FOUND)
