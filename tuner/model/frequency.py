"""Streaming item-frequency estimation for the logQ correction (Yi et al. 2019, Algorithm 2).

"Sampling-bias-corrected neural modeling for large corpus item recommendations" (RecSys 2019)
estimates how often each item is sampled from the training stream itself, so logQ works when
the corpus and its popularity drift and no global counts exist. Two arrays indexed by a hash
h(y) of the item: A[h] = the last step the item was seen, B[h] = a moving average of the gap
δ between its occurrences. At global step t, for an item of the batch:

    B[h] <- (1 - α)·B[h] + α·(t - A[h]);   A[h] <- t

and 1/B[h] estimates the item's occurrences per step.
"""
from __future__ import annotations

import tuner  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf


class StreamingFrequencyEstimator(tf.keras.layers.Layer):
    """Arrays A and B of Yi et al. as non-trainable weights (saved and restored with the model).

    Items are dense indices, so h(y) = y mod num_buckets: collision-free when num_buckets
    >= the number of items, and spread evenly otherwise. Steps are global steps t >= 1 that
    never decrease; A = 0 marks a bucket never seen.
    """

    def __init__(self, num_buckets: int, alpha: float, batch_size: int, **kwargs):
        super().__init__(**kwargs)
        if num_buckets < 1 or not 0 < alpha <= 1 or batch_size < 1:
            raise ValueError(f"StreamingFrequencyEstimator: need num_buckets >= 1, 0 < alpha <= 1, batch_size >= 1; "
                             f"got {num_buckets}, {alpha}, {batch_size}")
        self.num_buckets, self.alpha, self.batch_size = int(num_buckets), float(alpha), int(batch_size)
        self.last_seen = self.add_weight(name="A", shape=[self.num_buckets], dtype=tf.int64,
                                         initializer="zeros", trainable=False)
        self.gap = self.add_weight(name="B", shape=[self.num_buckets], dtype=tf.float32,
                                   initializer="zeros", trainable=False)
        self.step = self.add_weight(name="step", shape=[], dtype=tf.int64, initializer="zeros", trainable=False)

    def _bucket(self, items: tf.Tensor) -> tf.Tensor:
        return tf.math.floormod(tf.cast(tf.reshape(items, [-1]), tf.int64), self.num_buckets)

    def update(self, items: tf.Tensor, step) -> None:
        """Applies Algorithm 2's update for every item of a batch seen at global step `step` (>= 1).

        An item occurring k times in the batch is updated as k sequential occurrences: one with
        gap t - A, then k - 1 with gap 0, in closed form
        B <- (1-α)^k·B + α·(1-α)^(k-1)·(t - A). So 1/B counts occurrences per step (a
        popular item drawn k times per batch converges to B = 1/k), and the result does not
        depend on the order of items in the batch. A bucket seen for the first time takes its
        gap as the prior B (seen once in t steps), so it starts at B = t instead of near zero.
        """
        t = tf.cast(step, tf.int64)
        buckets, index = tf.unique(self._bucket(items))
        k = tf.math.unsorted_segment_sum(tf.ones_like(index, tf.float32), index, tf.size(buckets))
        last = tf.gather(self.last_seen, buckets)
        prev = tf.gather(self.gap, buckets)
        gap = tf.cast(t - last, tf.float32)
        prev = tf.where(last > 0, prev, gap)
        decay = tf.pow(1.0 - self.alpha, k - 1.0)
        new_gap = decay * ((1.0 - self.alpha) * prev + self.alpha * gap)
        self.gap.scatter_update(tf.IndexedSlices(new_gap, buckets))
        self.last_seen.scatter_update(tf.IndexedSlices(tf.fill(tf.shape(buckets), t), buckets))
        self.step.assign(tf.maximum(self.step, t))

    def probability(self, items: tf.Tensor) -> tf.Tensor:
        """Per-draw sampling probability p = 1 / (B · batch_size) of each item, float32 of items' shape.

        1/B is the expected number of occurrences per step, i.e. per `batch_size` draws; the
        logQ correction needs the probability of one draw, the same scale as count/total of the
        "counts" mode, so that temperature and logQ interact identically in both modes and MNS can
        mix it with the uniform 1/N. A bucket never seen has had fewer than one occurrence in
        all steps so far: B is taken as max(steps, 1).
        """
        buckets = self._bucket(items)
        seen = tf.gather(self.last_seen, buckets) > 0
        floor = tf.cast(tf.maximum(self.step, 1), tf.float32)
        gap = tf.where(seen, tf.gather(self.gap, buckets), floor)
        p = 1.0 / (tf.maximum(gap, 1e-12) * self.batch_size)
        return tf.reshape(p, tf.shape(items))
