"""Full-corpus top-K metrics of a two-tower model, and of MostPopular on the same protocol.

The model's towers encode the part's queries and the whole corpus (TensorFlow, here only); the
ranking and the metrics are `tuner.ranking`'s, the one ranking every baseline goes through too,
where the protocol is stated. The candidates are encoded in the order the ranking reads them.
`users` restricts a part to a sample of its users (`tuner.heldout.sample_users`: the cheap
per-epoch validation); `tuner.heldout.with_cold_users` adds the metrics of the part's cold users.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from tuner import ranking, topk
from tuner.data.types import Split
from tuner.heldout import only_users, queries_of

BATCH = 131072  # rows per tower call when encoding (1M id-only candidates: 84 ms in 32,768s, 61 ms; a
# tower whose layers sum to 512 wide holds 256 MB of activations)


def evaluate(model, split: Split, part: str, ks: list[int], memory_mb: float = 512,
             log: ranking.Log | None = None, users: np.ndarray | None = None) -> dict[str, float]:
    """Metrics of a two-tower model (`query_tower`, `candidate_tower`) on `split.<part>`, or on
    its interactions of `users` alone; {} if empty."""
    split = only_users(split, part, users)
    queries = queries_of(split, part, ks)
    if queries is None:
        return {}
    num_items = split.dataset.num_items
    users = queries.user
    # the candidates are encoded in the order the ranking reads them: no copy of the table (33 ms at 1M items)
    tile = ranking.factored_tile(len(users), num_items)
    order = topk.tile_order(num_items, tile) + 1
    candidates = encode(lambda s, e: model.candidate_tower(tf.constant(order[s:e], tf.int32), training=False),
                        len(order))

    def encode_queries(s, e):
        features = {"user": tf.constant(users[s:e], tf.int32)}
        if queries.history is not None:
            features["history"] = tf.constant(queries.history[s:e], tf.int32)
        return model.query_tower(features, training=False)

    # np.asarray shares the tensors' memory (.numpy() copies: 33 ms for 1M x 32)
    embeddings = ranking.Embeddings(np.asarray(encode(encode_queries, len(users))), np.asarray(candidates), tile)
    return ranking.rank(embeddings, queries, num_items, ks, memory_mb, log, f"{part} (model)")


def most_popular(split: Split, part: str, ks: list[int], memory_mb: float = 512,
                 log: ranking.Log | None = None, users: np.ndarray | None = None) -> dict[str, float]:
    """The same metrics for ranking every query by training counts; {} if the part is empty."""
    split = only_users(split, part, users)
    queries = queries_of(split, part, ks)
    if queries is None:
        return {}
    num_items = split.dataset.num_items
    counts = split.item_counts()[1:num_items + 1].astype(np.float32)
    return ranking.rank(counts, queries, num_items, ks, memory_mb, log, f"{part} (MostPopular)")


def encode(tower: Callable[[int, int], tf.Tensor], n: int) -> tf.Tensor:
    """Rows 0..n-1 of a tower's output, computed in batches; `tower(start, end)` encodes one batch."""
    return tf.concat([tf.cast(tower(s, min(s + BATCH, n)), tf.float32) for s in range(0, n, BATCH)], axis=0)


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


def _cell(value) -> str:
    """Counts (cold_users) as integers, metrics to 4 decimals."""
    return str(value) if isinstance(value, (int, np.integer)) else f"{value:.4f}"
