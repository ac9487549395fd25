"""The memory bank of cross-batch negative sampling (CBNS; Wang et al., SIGIR 2021).

"Cross-Batch Negative Sampling for Training Two-Tower Recommenders" reuses the candidate
embeddings of the last few batches as extra negatives: the candidate tower drifts little from
step to step, so a bank of M stored rows costs one [B, M] block of scores instead of encoding
M more items. Each row keeps its item id (for accidental-hit masking) and the log q it was
drawn with (its logQ correction). Rows are stored without gradient.
"""
from __future__ import annotations

import tuner  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf


class CrossBatchBank(tf.keras.layers.Layer):
    """A FIFO of the most recent `size` rows: embeddings float32[M, d], ids int32[M], log_q float32[M].

    State (non-trainable weights, saved with the model): `embeddings`, `ids`, `log_q`; `count`,
    the number of valid rows (min(rows enqueued, M)); `position`, the next slot to write. A ring
    buffer: `enqueue` writes a batch's B rows at slots position, position + 1, ... modulo M,
    over the oldest rows, so a step costs B rows instead of copying all M (concatenating and
    slicing the whole bank). `read` returns the valid rows in slot order, which is not their
    age order once the ring has wrapped: a softmax does not depend on the order of its
    columns. `oldest_first` gives age order, for inspection.
    """

    def __init__(self, size: int, dim: int, **kwargs):
        super().__init__(**kwargs)
        if size < 1 or dim < 1:
            raise ValueError(f"CrossBatchBank: need size >= 1 and dim >= 1; got {size}, {dim}")
        self.size, self.dim = int(size), int(dim)
        self.embeddings = self.add_weight(name="embeddings", shape=[self.size, self.dim], dtype=tf.float32,
                                          initializer="zeros", trainable=False)
        self.ids = self.add_weight(name="ids", shape=[self.size], dtype=tf.int32, initializer="zeros",
                                   trainable=False)
        self.log_q = self.add_weight(name="log_q", shape=[self.size], dtype=tf.float32, initializer="zeros",
                                     trainable=False)
        self.count = self.add_weight(name="count", shape=[], dtype=tf.int32, initializer="zeros", trainable=False)
        self.position = self.add_weight(name="position", shape=[], dtype=tf.int32, initializer="zeros",
                                        trainable=False)

    def enqueue(self, embeddings: tf.Tensor, ids: tf.Tensor, log_q: tf.Tensor) -> None:
        """Writes a batch (embeddings [B, d], ids [B], log_q [B]) over the oldest rows.

        A batch larger than the bank keeps its last M rows (distinct slots, so the write is exact).
        """
        embeddings, ids, log_q = embeddings[-self.size:], tf.cast(ids[-self.size:], tf.int32), log_q[-self.size:]
        rows = tf.shape(ids)[0]
        slots = tf.math.floormod(self.position + tf.range(rows), self.size)
        self.embeddings.scatter_update(tf.IndexedSlices(tf.stop_gradient(embeddings), slots))
        self.ids.scatter_update(tf.IndexedSlices(ids, slots))
        self.log_q.scatter_update(tf.IndexedSlices(tf.stop_gradient(log_q), slots))
        self.position.assign(tf.math.floormod(self.position + rows, self.size))
        self.count.assign(tf.minimum(self.count + rows, self.size))

    def read(self, use=True) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(embeddings [n, d], ids [n], log_q [n]) of the n valid rows, in slot order, without gradient.

        Until the ring wraps, the valid rows are slots 0..count-1; after, all M. `use` (a bool or
        a scalar bool tensor) false reads no rows: the CBNS warm-up.
        """
        valid = tf.where(use, self.count, 0)
        return (tf.stop_gradient(self.embeddings[:valid]), self.ids[:valid],
                tf.stop_gradient(self.log_q[:valid]))

    def oldest_first(self) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """The valid rows as `read` returns them, reordered from the oldest to the newest."""
        start = tf.where(self.count == self.size, self.position, 0)
        order = tf.math.floormod(start + tf.range(self.count), self.size)
        return tuple(tf.gather(tf.convert_to_tensor(v), order) for v in (self.embeddings, self.ids, self.log_q))
