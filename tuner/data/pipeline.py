"""The training `tf.data` pipeline, with an optional stream of corpus-uniform negatives.

Each epoch draws a fresh seeded permutation of row indices and gathers whole batches from
in-memory tensors: one op per batch instead of one per row, and no shuffle buffer, so 10M
rows cost no more per step than 100K. Uniform negatives (MNS) are item indices drawn from
their own infinite stream and zipped on; the candidate tower encodes them inside the step,
never the whole corpus per batch.
"""
from __future__ import annotations

import numpy as np

import tuner  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
import tensorflow as tf

from tuner.data.types import Interactions


def train_dataset(inter: Interactions, batch_size: int, seed: int, num_items: int,
                  uniform_negatives: int = 0, use_weights: bool = False,
                  recency_half_life: float = 0.0) -> tf.data.Dataset:
    """Shuffled (reshuffled every epoch) batches of {"user", "item", "weight"[, "history"]
    [, "uniform_negatives"]}; the last partial batch is kept. `recency_half_life` > 0 multiplies
    each weight by `recency_weights`."""
    n = len(inter)
    weight = inter.weight if use_weights else np.ones(n, np.float32)
    if recency_half_life > 0:
        weight = weight * recency_weights(n, recency_half_life)
    columns = {"user": inter.user, "item": inter.item, "weight": weight}
    if inter.history is not None:
        columns["history"] = inter.history
    dtypes = {"weight": tf.float32}
    tensors = {k: tf.constant(v, dtype=dtypes.get(k, tf.int32)) for k, v in columns.items()}

    def epoch(s):
        order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=tf.stack([s, 0]))
        starts = tf.data.Dataset.range(0, n, batch_size)
        return starts.map(lambda start: order[start:start + batch_size])

    # One random seed per iteration (epoch): the permutation differs every epoch but is
    # reproducible from `seed`.
    batches = (tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
               .flat_map(epoch)
               .map(lambda idx: {k: tf.gather(t, idx) for k, t in tensors.items()},
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))
    if uniform_negatives > 0:
        negatives = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=True).map(
            lambda s: tf.cast(tf.random.stateless_uniform([uniform_negatives], seed=tf.stack([s, 1]), minval=1,
                                                          maxval=num_items + 1, dtype=tf.int64), tf.int32))
        batches = tf.data.Dataset.zip((batches, negatives)).map(lambda b, neg: {**b, "uniform_negatives": neg})
    # A known length lets Keras end each epoch on the last batch instead of probing past it,
    # a probe that would count one step too many on the optimizer (the CBNS warm-up clock).
    steps = -(-n // batch_size)
    return batches.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(tf.data.AUTOTUNE)


def recency_weights(n: int, half_life: float) -> np.ndarray:
    """float32[n] for a time-ordered log of n rows: 1 for the latest row, halving every `half_life`
    share of the log back, rescaled to mean 1 (the loss keeps its scale, so the learning rate
    means the same). When test follows train in time, recent rows say more about it."""
    age = (n - 1 - np.arange(n)) / max(n, 1)
    weight = 0.5 ** (age / half_life)
    return (weight / weight.mean()).astype(np.float32)
