"""The sampled softmax of two-tower retrieval, one small function per concept.

Query i's positive is candidate column i (the diagonal); every other column is a sampled
negative: the batch's other positives, MNS's uniform draws, or CBNS bank rows. The pieces
follow `tfrs.tasks.Retrieval` (scores / τ, logQ, accidental hits, TFRS's `HardNegativeMining`,
softmax cross-entropy), composed here instead of inside the task because the task clips q to
[1e-6, 1]: beyond ~1M training interactions every item rarer than that gets the same
correction. Here log q is floored at log(1e-12), far below one count.
"""
from __future__ import annotations

import tuner  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

# TFRS's masked score: exp() of it minus any real score is exactly 0, and it stays finite.
MASKED_SCORE = float(np.finfo(np.float32).min / 100)
MIN_PROBABILITY = 1e-12  # q floor: one draw in 10^12, far below one count in any training set


def log_probability(q: tf.Tensor) -> tf.Tensor:
    """log q, with q floored at MIN_PROBABILITY (float32, q's shape)."""
    return tf.math.log(tf.maximum(q, MIN_PROBABILITY))


def corrected_logits(queries: tf.Tensor, candidates: tf.Tensor, temperature: float,
                     log_q: tf.Tensor | None = None) -> tf.Tensor:
    """u_i·v_j / τ − log q_j, float32[B, C], for queries [B, d], candidates [C, d], log_q [C].

    The temperature divides the score before the logQ term, as in TFRS. It is applied to the
    B queries rather than to the B×C scores: the same logits, one pass fewer over the block.
    (Carrying −log q as one more dimension of the product instead measured 2% slower.)
    """
    logits = tf.matmul(queries / temperature, candidates, transpose_b=True)
    return logits if log_q is None else logits - log_q[None, :]


def accidental_hits(positive_ids: tf.Tensor, column_ids: tf.Tensor) -> tf.Tensor:
    """bool[B, C]: column j carries query i's positive item and is not i's own column (j ≠ i).

    positive_ids int32[B], column_ids int32[C] (C ≥ B; the first B columns are the positives).
    A sampled copy of the positive is not a negative, wherever it was sampled from (another
    query's positive, an MNS draw, a CBNS bank row).
    """
    hits = tf.equal(positive_ids[:, None], column_ids[None, :])
    return tf.linalg.set_diag(hits, tf.zeros_like(positive_ids, tf.bool))


def cross_entropy(logits: tf.Tensor, hits: tf.Tensor | None = None, sample_weight: tf.Tensor | None = None,
                  hard_negatives: int = 0) -> tf.Tensor:
    """Softmax cross-entropy with the positive on the diagonal, a (weighted) mean per query: float32[].

    mean_i w_i·(log Σ_j exp z_ij − z_ii) over logits z [B, C], without the columns where
    hits [B, C] is true; the mean divides by B whatever the weights [B] (TFRS's
    SUM_OVER_BATCH_SIZE), so losses of different batch sizes compare. `hard_negatives` > 0
    keeps only that many highest-scoring negatives per query (TFRS's `HardNegativeMining`).
    """
    num_queries = tf.shape(logits)[0]
    if hard_negatives > 0:
        if hits is not None:
            logits = tf.where(hits, MASKED_SCORE, logits)
        logits, labels = tfrs.layers.loss.HardNegativeMining(hard_negatives)(
            logits, tf.eye(num_queries, tf.shape(logits)[1]))
        losses = tf.nn.softmax_cross_entropy_with_logits(labels, logits)
    else:
        losses = diagonal_cross_entropy(logits, hits)
    if sample_weight is not None:
        losses = losses * tf.cast(sample_weight, losses.dtype)
    return tf.reduce_sum(losses) / tf.cast(num_queries, losses.dtype)


def catalog_cross_entropy(logits: tf.Tensor, positives: tf.Tensor, sample_weight: tf.Tensor | None = None,
                          hard_negatives: int = 0) -> tf.Tensor:
    """The full softmax: cross-entropy over every item of the catalog, a (weighted) mean per query: float32[].

    logits z [B, N] score each query against all N items (column j is item j + 1); positives
    int32[B] are item indices 1..N. Every item is a column exactly once, so the only column
    holding the positive is its own: nothing to mask. mean_i w_i·(log Σ_j exp z_ij − z_i,pos_i),
    divided by B as in `cross_entropy`; `hard_negatives` > 0 keeps that many highest-scoring
    negatives per query beside the positive.
    """
    labels = tf.one_hot(tf.cast(positives, tf.int32) - 1, tf.shape(logits)[1], dtype=logits.dtype)
    if hard_negatives > 0:
        logits, labels = tfrs.layers.loss.HardNegativeMining(hard_negatives)(logits, labels)
    losses = tf.nn.softmax_cross_entropy_with_logits(labels, logits)
    if sample_weight is not None:
        losses = losses * tf.cast(sample_weight, losses.dtype)
    return tf.reduce_sum(losses) / tf.cast(tf.shape(logits)[0], losses.dtype)


def diagonal_cross_entropy(logits: tf.Tensor, hits: tf.Tensor | None = None) -> tf.Tensor:
    """−log softmax(z)[i, i] per query, float32[B], for logits z [B, C] with the columns where hits is true masked.

    The values and gradient of `tf.nn.softmax_cross_entropy_with_logits` on one-hot diagonal
    labels, from TensorFlow's softmax kernel: on this 2-core CPU the fused cross-entropy
    kernels took about twice as long on a [128, 2176] CBNS block. The gradient, softmax −
    one-hot, reuses the forward softmax; masked columns have probability exactly 0 and so no
    gradient, without a second pass. log Σ_j exp z_ij = max_j z_ij − log max_j p_ij stays
    finite however small the positive's probability is.
    """

    @tf.custom_gradient
    def per_query(z):
        if hits is not None:
            z = tf.where(hits, MASKED_SCORE, z)
        p = tf.nn.softmax(z)
        log_normalizer = tf.reduce_max(z, axis=1) - tf.math.log(tf.reduce_max(p, axis=1))

        def gradient(upstream):
            scaled = p * upstream[:, None]
            return tf.linalg.set_diag(scaled, tf.linalg.diag_part(scaled) - upstream)

        return log_normalizer - tf.linalg.diag_part(z), gradient

    return per_query(logits)


def balanced_cross_batch_loss(queries: tf.Tensor, positives: tf.Tensor, bank: tf.Tensor, temperature: float,
                              log_q: tf.Tensor | None = None, hits: tf.Tensor | None = None,
                              sample_weight: tf.Tensor | None = None, hard_negatives: int = 0) -> tf.Tensor:
    """CBNS with each tower trained by the softmax whose negatives can move it: float32[].

        L = CE(u·sg(v_batch) ∪ u·bank) + CE(sg(u)·v_batch)      (sg: stop gradient)

    queries u [B, d], positives v_batch [B, d], bank [M, d] (stored, no gradient); log_q [B + M]
    and hits [B, B + M] cover the batch columns then the bank columns; the same τ and logQ on
    every column. The query tower learns from the full softmax over in-batch and bank columns,
    the item tower from the in-batch softmax only. Why: with one softmax over both (`paper`),
    the gradients on the batch's item embeddings sum to −Σ_i m_i·u_i / (B·τ), m_i being the
    share of query i's softmax mass on bank columns (about M / (B + M), 80% at M = 4B). In-batch,
    each query's pushes on the item tower cancel its pull (m_i = 0); bank rows carry no gradient,
    so here the pull wins, every item drifts toward the queries and item embeddings bunch
    (experiments/negatives: mean item-item cosine 0.39–0.44 against 0.06, test recall@10 −54
    to −65% against in-batch). Balanced, the same runs match in-batch (README, "The loss").

    The value returned is the first term, the full softmax's loss (what `paper` CBNS reports,
    comparable with in-batch and MNS losses); its gradient is that of L.
    """
    num_batch = tf.shape(positives)[0]
    columns = tf.concat([tf.stop_gradient(positives), bank], 0)
    query_loss = cross_entropy(corrected_logits(queries, columns, temperature, log_q), hits, sample_weight,
                               hard_negatives)
    batch_log_q = None if log_q is None else log_q[:num_batch]
    batch_hits = None if hits is None else hits[:, :num_batch]
    item_loss = cross_entropy(corrected_logits(tf.stop_gradient(queries), positives, temperature, batch_log_q),
                              batch_hits, sample_weight, hard_negatives)
    return query_loss + (item_loss - tf.stop_gradient(item_loss))

