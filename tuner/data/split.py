"""Train/val/test splits and per-interaction histories.

Histories are taken from the whole log, strictly before each interaction's timestamp, so a
val or test query sees what the user did before it (as a served model would) and never the
interaction itself or anything at the same instant. Everything is vectorised over the
(user, time)-sorted log, which keeps 10M interactions to seconds.
"""
from __future__ import annotations

import numpy as np

from tuner.config import SPLITS
from tuner.data.types import Dataset, Interactions, Split
from tuner.errors import ConfigError, DataError

TRAIN, VAL, TEST = 0, 1, 2


def histories(user: np.ndarray, item: np.ndarray, timestamp: np.ndarray, length: int,
              block: int = 1 << 16) -> np.ndarray:
    """int32 [n, length]: each row's user's last `length` items strictly before its timestamp,
    most recent last, left-padded with 0. Rows must be sorted by time (ties in any order)."""
    order = np.argsort(user, kind="stable")  # by user, then time
    u, t, items = user[order], timestamp[order], item[order]
    n = len(u)
    new_user = np.ones(n, bool)
    new_user[1:] = u[1:] != u[:-1]
    new_time = new_user.copy()
    new_time[1:] |= t[1:] != t[:-1]
    pos = np.arange(n)
    # Per row, in the original order: where its user's rows start in `items`, and where its
    # tie group (same user, same timestamp) starts; the history is what lies between.
    first = np.empty(n, np.int64)
    first[order] = np.maximum.accumulate(np.where(new_user, pos, 0))
    stop = np.empty(n, np.int64)
    stop[order] = np.maximum.accumulate(np.where(new_time, pos, 0))
    del u, t, new_user, new_time, pos
    out = np.empty((n, length), np.int32)
    offsets = np.arange(-length, 0)
    for lo in range(0, n, block):  # blocks of rows keep the [rows, length] temporaries small
        src = stop[lo:lo + block, None] + offsets
        out[lo:lo + block] = np.where(src >= first[lo:lo + block, None], items[np.maximum(src, 0)], 0)
    return out


def _parts(inter: Interactions, cfg) -> np.ndarray:
    """TRAIN/VAL/TEST per interaction."""
    n = len(inter)
    part = np.full(n, TRAIN, np.int8)
    n_test, n_val = int(round(n * cfg.test_fraction)), int(round(n * cfg.val_fraction))
    if cfg.method == "random":
        perm = np.random.default_rng(cfg.seed).permutation(n)
        part[perm[:n_test]] = TEST
        part[perm[n_test:n_test + n_val]] = VAL
    elif cfg.method == "temporal":  # interactions are time-sorted: the cut is a position
        part[n - n_test - n_val:n - n_test] = VAL
        part[n - n_test:] = TEST
    elif cfg.method == "leave_last_out":
        order = np.argsort(inter.user, kind="stable")  # by user, then time
        u = inter.user[order]
        last = np.ones(n, bool)
        last[:-1] = u[:-1] != u[1:]
        counts = np.bincount(u)
        enough = counts[u] >= 3
        ends = np.flatnonzero(last)
        rank_from_end = ends[np.searchsorted(ends, np.arange(n))] - np.arange(n)  # 0 = the user's last
        sorted_part = np.where(enough & (rank_from_end == 0), TEST, np.where(enough & (rank_from_end == 1), VAL, TRAIN))
        part[order] = sorted_part
    else:
        raise ConfigError(f"split.method: {cfg.method!r} is not one of {', '.join(SPLITS)}")
    return part


def make_split(dataset: Dataset, cfg, history_length: int = 0) -> Split:
    """Splits `dataset` by `cfg` (a `tuner.config.SplitConfig`); every part stays in time order."""
    inter = dataset.interactions
    if history_length > 0:
        inter = Interactions(inter.user, inter.item, inter.timestamp, inter.weight,
                             histories(inter.user, inter.item, inter.timestamp, history_length))
    part = _parts(inter, cfg)
    train, val, test = (inter.take(np.flatnonzero(part == p)) for p in (TRAIN, VAL, TEST))
    return Split(dataset, train, val, test)


MIN_TRAIN = 2  # one training interaction is a softmax over one column: its loss is 0, nothing is learned


def check_sizes(split: Split, cfg, source: str) -> list[str]:
    """Warnings for held-out parts the config asks for but the data leaves empty (their metrics
    would be silently empty); a DataError if too little is left to train on. `source` names the data."""
    n = len(split.train) + len(split.val) + len(split.test)
    how = (f"split.method {cfg.method}" if cfg.method == "leave_last_out" else
           f"split.val_fraction {cfg.val_fraction:g}, test_fraction {cfg.test_fraction:g}")
    if len(split.train) < MIN_TRAIN:
        raise DataError(f"{source}: {n:,} interaction(s) leave {len(split.train)} to train on after the split "
                        f"({how}); training needs at least {MIN_TRAIN}")
    warnings = []
    for part, fraction in (("val", cfg.val_fraction), ("test", cfg.test_fraction)):
        if not len(getattr(split, part)) and (fraction > 0 or cfg.method == "leave_last_out"):
            reason = ("no user has 3 interactions" if cfg.method == "leave_last_out" else
                      f"{n:,} interactions × split.{part}_fraction {fraction:g} rounds to 0")
            warnings.append(f"warning: {source}: the {part} part is empty ({reason}): "
                            f"{part} metrics will be empty")
    return warnings
