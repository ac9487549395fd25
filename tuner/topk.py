"""Exact top-K of every query row over a whole corpus, a block of items at a time.

Ranking, not scoring, was the cost of full-corpus evaluation: `tf.math.top_k` over 1M-wide
score rows ran at ~705 rows/s on a 2-core CPU, and writing those rows to memory cost as much
again. Here a full score row never exists. The scores of a block of items (2 MB of scores,
tiles of ~112 KB, one matrix product each) are computed and reduced at once:

- items form groups of GROUP consecutive indices; the block's masked items are set to -inf
  (after their unmasked scores are looked up), and the block yields each group's maximum;
- each row keeps a running threshold, the k-th largest group maximum so far; a block's groups
  above it are let in, their scores copied out of the block (about k·(1 + ln(groups / k)) per
  row: ~740 of 62,500 at 1M items and k = 100; ~840 as the threshold moves in steps);
- the answer is the top k of the items of each row's top k groups.

Where the time goes at 1M items, d = 32 (a 224-row chunk of the synthetic corpus, one core, CPU
time per query): the products 0.65 ms (~100 GFLOP/s, the core's GEMM peak is ~105), the group
maxima 0.08, copying the groups let in 0.08, the rest (thresholds, masks, the final top k)
~0.1: 0.91-0.96 ms in all, against 1.10-1.16 when each 1 MB tile was one product and the masks
were applied to the groups let in. With a chunk per core, the products of a block are one numpy
call (a stacked matmul, which runs them all without the GIL): a Python loop of ~20 us products
made the two threads queue for the GIL between products, 1,335-1,401 queries/s against
1,531-1,739 with the stacked call (2 cores, the two alternating in one process).

Exact, ties included. Items rank by (score descending, index ascending), as the stable
`tf.math.top_k` does. If item x is in the top k, its group g is among the top k groups (by
maximum, the lower group first on ties): every group ranked ahead of g holds an item ranked
ahead of x (a higher score, or an equal one at a lower index, since groups are index ranges),
so fewer than k groups rank ahead of g. And g was let in: a group is kept out only when its
maximum is at or below the threshold, which k groups at lower indices already reach, so it
ranks behind those k.

Every score is computed once, in its tile, so the maxima, the masking, the ranking and the
looked-up scores see the same values. (Which last bit a float32 dot product gets depends on the
BLAS kernel a shape selects: TensorFlow's matmul gave different bits for 7-row and 134-row
chunks, so no implementation is bit-for-bit stable across chunk sizes; with the same scores,
the ranking is the same.)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tuner.errors import EvaluationError

GROUP = 16  # items per group: fastest from 1,682 to 1M items (8 and 32 within 7%; 64 up to 2x slower)
TILE_BYTES = 112 << 10  # scores of one product (128 items x 224 rows): see tile_items
BLOCK_BYTES = 2 << 20  # scores of the tiles ranked together (2 cores: 1 MB 9-28% slower, 3-4 MB within noise)
UPDATE_EVERY = 16  # groups let in per row, on average, between two updates of the threshold (64: 4% slower)


def tile_items(rows: int, num_items: int, itemsize: int = 4) -> int:
    """Items per tile for chunks of `rows` queries: whole groups, TILE_BYTES of scores, at most the corpus.

    A tile is one matrix product. OpenBLAS multiplies products of at most 10⁶ multiply-adds
    without packing them (its small-matrix kernels): [139, 32] x [32, 224] ran at ~100 GFLOP/s on
    one core, [140, 32] x [32, 224] and anything larger at 80-86, so TILE_BYTES keeps a tile of
    d = 32 below that bound (a larger d only makes the products slower, not wrong)."""
    groups = -(-num_items // GROUP)
    return GROUP * max(1, min(groups, TILE_BYTES // (rows * itemsize * GROUP)))


class Source:
    """Scores of a chunk of query rows, one tile of `tile` items at a time, in tile layout: the
    tile's local item g * GROUP + j is at row j * (tile // GROUP) + g of a [tile, rows] array, so a
    group's maximum is an elementwise maximum of GROUP contiguous slices."""

    dtype = np.float32
    tile = GROUP

    def fill(self, out: np.ndarray, start: int) -> None:
        """Writes the scores of items start..start + tile - 1 (0-based; those past the corpus are
        padding, any value) into out [tile, rows], in tile layout."""
        raise NotImplementedError

    def fill_tiles(self, outs: np.ndarray, first: int) -> None:
        """`fill` of tiles number first, first + 1, ... into outs[0], outs[1], ... (outs: [tiles, tile, rows])."""
        for number, out in enumerate(outs, first):
            self.fill(out, number * self.tile)


class DotScores(Source):
    """Query row q scores item i (1-based) with queries[q] · items[i - 1]. The item table comes
    in tile layout (`tile_order`), so the matrix product of a tile writes the tile layout itself;
    a two-tower model's candidates are encoded in that order, so the table is never copied."""

    def __init__(self, queries: np.ndarray, laid_out_items: np.ndarray, tile: int):
        """laid_out_items: [whole tiles, d], row p holding item tile_order(num_items, tile)[p]."""
        if len(laid_out_items) % tile:
            raise ValueError(f"{len(laid_out_items)} item rows are not whole tiles of {tile}: see tile_order")
        self.tile = tile
        self.item_tiles = laid_out_items.reshape(-1, tile, laid_out_items.shape[1])  # a view: one product a tile
        # the queries are kept as [d, rows], contiguous: the product ran 6% faster than with a .T view
        self.transposed = np.ascontiguousarray(queries.T)
        self.dtype = np.result_type(queries.dtype, laid_out_items.dtype)
        _check_no_nan(queries, laid_out_items)

    def rows(self, start: int, end: int) -> "DotScores":
        """The same scores for query rows start..end-1 (sharing the item table)."""
        chunk = object.__new__(type(self))
        chunk.__dict__.update(self.__dict__, transposed=np.ascontiguousarray(self.transposed[:, start:end]))
        return chunk

    def fill_tiles(self, outs, first):
        # one call for the block's tiles: a product each, all without the GIL (see the module's docstring)
        np.matmul(self.item_tiles[first:first + len(outs)], self.transposed, out=outs)


class SharedScores(DotScores):
    """Every query row scores item i (1-based) with values[i - 1] (MostPopular: training counts)."""

    def __init__(self, values: np.ndarray, rows: int, tile: int):
        super().__init__(np.zeros((rows, 1), values.dtype), values[tile_order(len(values), tile), None], tile)

    def fill_tiles(self, outs, first):
        np.copyto(outs, self.item_tiles[first:first + len(outs)])  # broadcast over the rows


def tile_order(num_items: int, tile: int) -> np.ndarray:
    """The 0-based item at each row of a tile-layout item table: row t * tile + j * (tile // GROUP)
    + g holds item t * tile + g * GROUP + j. The last tile is padded with item 0 (padding scores
    are never ranked)."""
    order = np.arange(-(-num_items // tile) * tile).reshape(-1, tile // GROUP, GROUP).swapaxes(1, 2).reshape(-1)
    order[order >= num_items] = 0
    return order


class DenseScores(Source):
    """A chunk's whole score matrix [rows, N], as scorers without factors produce it."""

    def __init__(self, matrix: np.ndarray, tile: int):
        if not np.issubdtype(matrix.dtype, np.floating):  # masking writes -inf
            matrix = matrix.astype(np.float64)
        self.matrix, self.tile, self.dtype = matrix, tile, matrix.dtype
        if np.isnan(matrix).any():
            raise EvaluationError(NAN_SCORES)

    def fill(self, out, start):
        part = self.matrix[:, start:start + self.tile]
        rows, width = part.shape
        if width < self.tile:  # the last tile: pad
            part = np.concatenate([part, np.zeros((rows, self.tile - width), part.dtype)], axis=1)
        np.copyto(out.reshape(GROUP, -1, rows), part.reshape(rows, -1, GROUP).transpose(2, 1, 0))


@dataclass(frozen=True)
class Ranked:
    items: np.ndarray  # [rows, k] int64, 1-based; 0 where the score is -inf (masked)
    values: np.ndarray  # [rows, k] scores, rank order
    looked_up: np.ndarray  # scores of the requested (row, item) pairs, before masking


def rank(source: Source, rows: int, num_items: int, k: int,
         masked: tuple[np.ndarray, np.ndarray] | None = None,
         lookup: tuple[np.ndarray, np.ndarray] | None = None) -> Ranked:
    """Top k of items 1..num_items for each of `rows` query rows; `masked` (row, item) pairs
    score -inf; `lookup` (row, item) pairs get their unmasked scores back. k <= num_items."""
    tile, dtype = source.tile, source.dtype
    num_tiles, per_tile = -(-num_items // tile), tile // GROUP
    per_block = min(num_tiles, max(1, BLOCK_BYTES // (tile * rows * np.dtype(dtype).itemsize)))
    scores = np.empty((per_block, GROUP, per_tile * rows), dtype)  # the block's tiles, each in tile layout
    flat, tiles = scores.reshape(-1), scores.reshape(per_block, tile, rows)
    maxima = np.empty((per_block, per_tile * rows), dtype)  # = [groups of the block, rows]
    lookups, masks = (_InBlocks(pairs, tile, rows, per_block, num_tiles) for pairs in (lookup, masked))
    looked_up = np.empty(len(lookups.at), dtype)
    groups = _Groups(rows, num_items, per_tile, per_block, k, dtype)
    for block, first in enumerate(range(0, num_tiles, per_block)):
        count = min(per_block, num_tiles - first)
        source.fill_tiles(tiles[:count], first)
        if (first + count) * tile > num_items:  # padding
            start = (num_tiles - 1) * tile
            tiles[count - 1][_position(np.arange(num_items - start, tile), per_tile)] = -np.inf
        lo, hi = lookups.edges[block:block + 2]
        np.take(flat, lookups.at[lo:hi], out=looked_up[lo:hi], mode="clip")
        lo, hi = masks.edges[block:block + 2]
        flat[masks.at[lo:hi]] = -np.inf
        np.maximum.reduce(scores[:count], axis=1, out=maxima[:count])
        groups.add(first, groups.entering(maxima[:count]), scores, maxima)
        if groups.threshold is None or groups.pending >= rows * UPDATE_EVERY or first + count == num_tiles:
            groups.update()
    row_groups, candidates = groups.final()
    items = (row_groups[:, :, None] * GROUP + np.arange(GROUP)).reshape(rows, -1)  # ascending in each row
    keep = first_k_largest(candidates, k)  # so the first of equal scores is the lower index
    values, items = candidates[keep].reshape(rows, k), items[keep].reshape(rows, k)
    by_rank = np.lexsort((items, -values), axis=-1)
    values, items = np.take_along_axis(values, by_rank, 1), np.take_along_axis(items, by_rank, 1) + 1
    items[np.isneginf(values)] = 0  # masked items are not recommended, even when k exceeds the rest
    in_given_order = np.empty_like(looked_up)
    in_given_order[lookups.order] = looked_up
    return Ranked(items, values, in_given_order)


class _InBlocks:
    """(row, item) pairs, ordered by block (pairs[order]), as positions in the flat scores of
    their block [tiles, tile, rows]: pairs edges[b]..edges[b + 1] - 1 fall in block b."""

    def __init__(self, pairs, tile: int, rows: int, per_block: int, num_tiles: int):
        row, item = (np.empty(0, np.int64),) * 2 if pairs is None else (np.asarray(p, np.int64) for p in pairs)
        block_items, num_blocks = per_block * tile, -(-num_tiles // per_block)
        block, local = np.divmod(item - 1, block_items)
        self.order = _stable_by_row(block, num_blocks)  # a radix sort: 3x faster than sorting by item
        self.edges = np.r_[0, np.cumsum(np.bincount(block, minlength=num_blocks))].tolist()
        row, local = row[self.order], local[self.order]
        self.at = (local - local % tile + _position(local % tile, tile // GROUP)) * rows + row


class _Groups:
    """The groups that may be among each row's top k, with their scores, and the running
    threshold: each row's k-th largest group maximum so far. A later group whose maximum is at
    or below it cannot be among the row's top k: k groups at lower indices already reach it.
    The maxima are taken after masking; the threshold moves every UPDATE_EVERY groups let in
    per row (a stale threshold only lets more in).
    """

    def __init__(self, rows: int, num_items: int, per_tile: int, per_block: int, k: int, dtype):
        self.rows, self.num_groups, self.per_tile = rows, -(-num_items // GROUP), per_tile
        self.k = min(k, self.num_groups)
        self.threshold = None  # until every row has k groups, every group is let in
        self.above = np.empty((per_block * per_tile, rows), bool)
        self.best = np.empty((rows, 0), dtype)  # each row's k largest maxima, any order
        self.scores = np.empty((GROUP, 16 * rows * self.k), dtype)  # the groups let in, one per column; grows
        self.slots = np.arange(GROUP)[:, None] * (per_tile * rows)  # a group's slots from its first, in a tile's scores
        self.count = self.done = 0  # columns used; those before `done` are in the threshold
        self.keys, self.maxima = [], []  # of the groups let in: row * num_groups + group, maximum
        self.new_rows, self.new_maxima = [], []  # of those let in since the last update: row, maximum

    @property
    def pending(self) -> int:
        return self.count - self.done

    def entering(self, maxima: np.ndarray) -> np.ndarray:
        """Columns (group * rows + row) of a block's maxima [tiles, groups per tile * rows] whose group is let in."""
        if self.threshold is None:
            return np.arange(maxima.size)
        above = self.above[:maxima.size // self.rows]
        return np.flatnonzero(np.greater(maxima.reshape(above.shape), self.threshold, out=above))

    def add(self, first: int, column: np.ndarray, scores: np.ndarray, maxima: np.ndarray) -> None:
        """Copies the groups at `column` of the block whose first tile is number `first`: scores
        [tiles, GROUP, groups per tile * rows], maxima [tiles, groups per tile * rows]."""
        group = first * self.per_tile + column // self.rows
        if len(group) and group[-1] >= self.num_groups:  # the last tile: not its padding groups
            column, group = column[group < self.num_groups], group[group < self.num_groups]
        if self.count + len(column) > self.scores.shape[1]:
            grown = np.empty((GROUP, 2 * (self.count + len(column))), self.scores.dtype)
            grown[:, :self.count] = self.scores[:, :self.count]
            self.scores = grown
        width = self.per_tile * self.rows
        at = column + column // width * ((GROUP - 1) * width)  # slot 0 of each group in the flat scores
        np.take(scores.reshape(-1), at + self.slots, out=self.scores[:, self.count:self.count + len(column)], mode="clip")
        self.count += len(column)
        row, group_maxima = column % self.rows, np.take(maxima.reshape(-1), column)
        self.keys.append(row * self.num_groups + group)
        self.maxima.append(group_maxima)
        self.new_rows.append(row)
        self.new_maxima.append(group_maxima)

    def update(self) -> None:
        """Moves the threshold by the groups let in since the last update."""
        row, maxima = np.concatenate(self.new_rows), np.concatenate(self.new_maxima)
        self.new_rows, self.new_maxima, self.done = [], [], self.count
        order = _stable_by_row(row, self.rows)
        row, maxima = row[order], maxima[order]
        count = np.bincount(row, minlength=self.rows)
        width = self.best.shape[1]
        table = np.full((self.rows, width + count.max(initial=0)), -np.inf, self.best.dtype)
        table[:, :width] = self.best
        table[row, width + np.arange(len(row)) - (np.cumsum(count) - count)[row]] = maxima
        if table.shape[1] > self.k:  # -inf padding never outranks a real k-th value: every row has k
            table = np.partition(table, table.shape[1] - self.k, axis=1)[:, -self.k:]
        self.best = table
        if table.shape[1] == self.k:  # rows have equal counts until then: every group was let in
            self.threshold = table.min(axis=1)

    def final(self) -> tuple[np.ndarray, np.ndarray]:
        """Each row's top k groups (by maximum, the lower group first on ties), ascending, [rows, k],
        and their scores [rows, k * GROUP]."""
        keys, maxima = np.concatenate(self.keys), np.concatenate(self.maxima)
        # only groups at or above the row's k-th largest maximum can be among its top k (~1 in 8 here)
        column = np.flatnonzero(maxima >= self.best.min(axis=1)[keys // self.num_groups])
        column = column[_stable_by_row(keys[column] // self.num_groups, self.rows)]  # each row's groups ascend already
        keys = keys[column]
        row = keys // self.num_groups
        count = np.bincount(row, minlength=self.rows)
        begin = np.cumsum(count) - count
        table = np.full((self.rows, count.max()), -np.inf, self.best.dtype)  # padding ranks behind a row's groups
        table[row, np.arange(len(keys)) - begin[row]] = maxima[column]
        chosen = (begin[:, None] + np.nonzero(first_k_largest(table, self.k))[1].reshape(self.rows, -1)).ravel()
        scores = np.take(self.scores, column[chosen], axis=1)  # [GROUP, rows * k]
        return (keys[chosen] % self.num_groups).reshape(self.rows, -1), scores.T.reshape(self.rows, -1)


def first_k_largest(values: np.ndarray, k: int) -> np.ndarray:
    """Mask of each row's k largest values, the first (lowest) positions among equal ones."""
    n = values.shape[1]
    if n <= k:
        return np.ones(values.shape, bool)
    kth = np.partition(values, n - k, axis=1)[:, n - k, None]
    keep = values >= kth
    tied_rows = np.flatnonzero(np.count_nonzero(keep, axis=1) > k)
    if len(tied_rows):  # more than k values reach the k-th: keep the first of the tied ones
        sub, threshold = values[tied_rows], kth[tied_rows]
        above, tied = sub > threshold, sub == threshold
        room = k - np.count_nonzero(above, axis=1)
        keep[tied_rows] = above | (tied & (np.cumsum(tied, axis=1) <= room[:, None]))
    return keep


def _stable_by_row(row: np.ndarray, rows: int) -> np.ndarray:
    """Stable argsort of row (or block) numbers 0..rows-1: a radix sort when they fit 16 bits."""
    return np.argsort(row.astype(np.uint16) if rows <= 1 << 16 else row, kind="stable")


NAN_SCORES = "scores: NaN in the scores of the corpus (the model's embeddings are not finite); no ranking exists"


def _check_no_nan(queries: np.ndarray, items: np.ndarray) -> None:
    """Dot products of finite vectors are NaN only when partial sums overflow to inf - inf."""
    def largest(x):  # >= every |x_i|; NaN if x has a NaN, inf if an inf
        return abs(float(x.min(initial=0))) + abs(float(x.max(initial=0)))
    bound = largest(queries) * largest(items) * queries.shape[1]
    if not bound < np.finfo(np.result_type(queries.dtype, items.dtype)).max / 2:
        raise EvaluationError(NAN_SCORES if np.isnan(bound) or np.isinf(bound) else
                              f"scores: the embeddings are too large for float scores (|q|·|v| up to {bound:.3g})")


def _position(local_items: np.ndarray, per_tile: int) -> np.ndarray:
    """Row of a tile's local items in tile layout."""
    return local_items % GROUP * per_tile + local_items // GROUP
