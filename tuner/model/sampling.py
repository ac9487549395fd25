"""The sampling probability q of every softmax column, which the logQ correction subtracts.

A sampled softmax is unbiased only if each column's score is corrected by the log of the
probability that the column was drawn (Bengio & Senécal 2008; Yi et al. 2019). In-batch
columns are draws from the training stream (unigram: count_j / total); MNS adds B' draws
from the uniform distribution over the corpus, so its columns come from a mixture.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np


def unigram_probabilities(counts: np.ndarray) -> np.ndarray:
    """Per-draw probability count_j / total of every item index (the in-batch sampling distribution).

    Items never seen in training (and padding index 0) get half a count, 0.5 / total: less
    likely than any item seen once, yet a finite log q if they ever appear as candidates.
    """
    counts = np.asarray(counts, dtype=np.float64)
    total = max(counts.sum(), 1.0)
    return (np.where(counts > 0, counts, 0.5) / total).astype(np.float32)


def window_counts(items: np.ndarray, num_items: int, share: float) -> np.ndarray:
    """Counts of item indices 0..num_items over the last `share` (0 < share ≤ 1) of a time-ordered item stream.

    As logQ's q they make the softmax learn log p(item | user) + log(q_recent / q_all): items whose
    popularity rises toward the end of training are favoured, those that faded pushed down.
    """
    items = np.asarray(items)
    recent = items[len(items) - window_rows(share, len(items)):]
    return np.bincount(recent, minlength=num_items + 1).astype(np.int64)


def window_rows(share: float, n: int) -> int:
    """ceil(share · n), at least 1, counted exactly: `share` is read as the decimal it was written
    as (0.55 is 11/20), since in floating point 0.55 · 100 is 55.000000000000007 and ceils to 56."""
    return max(1, math.ceil(Fraction(repr(float(share))) * n))


def mns_mixture_probability(p, num_batch, num_uniform, num_items):
    """Per-draw probability of a column under mixed negative sampling (Yang et al. 2020):

        q_j = (B·p_j + B'/N) / (B + B')

    A batch's B + B' columns are B draws from the training stream (item j with unigram
    probability p_j) and B' draws uniform over the N items, so one column is item j with the
    mixture's probability. p: float32[C] (a tensor or array), the unigram probability of each
    column's item; num_batch B, num_uniform B' and num_items N: scalars (ints or tensors).
    Returns float32[C], the same type as p.
    """
    b, b_uniform = num_batch, num_uniform
    return (b * p + b_uniform / num_items) / (b + b_uniform)
