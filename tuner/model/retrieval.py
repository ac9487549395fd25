"""The two-tower retrieval model: towers, negatives (in-batch, MNS, CBNS), logQ, hard negatives.

The loss is `tfrs.tasks.Retrieval`'s: it divides scores by the temperature, subtracts
log q (clipped to [1e-6, 1]) per column, removes accidental hits, keeps the hardest
negatives, and treats candidate columns beyond the batch as extra negatives for every query.
This module only decides which columns exist and what q each column gets. Top-K metrics are
never computed here: evaluation is a separate full-corpus pass (see DESIGN.md).
"""
from __future__ import annotations

import tuner  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tuner.config import Config, ConfigError
from tuner.data.types import Split
from tuner.model.frequency import StreamingFrequencyEstimator
from tuner.model.towers import CandidateTower, QueryTower


def unigram_probabilities(counts: np.ndarray) -> np.ndarray:
    """Per-draw probability count_j / total of every item index (the in-batch sampling distribution).

    Items never seen in training (and padding index 0) get half a count, 0.5 / total: less
    likely than any item seen once, yet a finite log q if they ever appear as candidates.
    """
    counts = np.asarray(counts, dtype=np.float64)
    total = max(counts.sum(), 1.0)
    return (np.where(counts > 0, counts, 0.5) / total).astype(np.float32)


class TwoTowerModel(tfrs.Model):
    """Query and candidate towers trained with a sampled softmax through `tfrs.tasks.Retrieval`.

    `compute_loss` features: "user" int32[B], "item" int32[B], optional "weight" float32[B],
    "history" int32[B, N] when the config has a history, "uniform_negatives" int32[B'] for MNS.
    """

    def __init__(self, cfg: Config, num_users: int, num_items: int, item_counts: np.ndarray,
                 user_features: dict | None = None, item_features: dict | None = None):
        super().__init__()
        m, r, n = cfg.model, cfg.retrieval, cfg.negatives
        self.cfg = cfg
        self.num_items = int(num_items)
        self.candidate_tower = CandidateTower(
            num_items, m.embedding_dim, item_features or {}, m.candidate_layers, m.dropout, m.normalize)
        history = None
        if m.history_length > 0:
            history = (self.candidate_tower.item_embedding if m.share_item_embedding else
                       tf.keras.layers.Embedding(num_items + 1, m.embedding_dim, name="history_embedding"))
        self.query_tower = QueryTower(num_users, m.embedding_dim, user_features or {}, history,
                                      m.history_pooling, m.query_layers, m.dropout, m.normalize)
        self.task = tfrs.tasks.Retrieval(
            # A mean over queries (weighted: sum(w_i * loss_i) / B), not TFRS's default sum, so
            # losses of different batch sizes and negative strategies compare.
            loss=tf.keras.losses.CategoricalCrossentropy(
                from_logits=True, reduction=tf.keras.losses.Reduction.SUM_OVER_BATCH_SIZE),
            temperature=r.temperature,
            num_hard_negatives=r.hard_negatives if r.hard_negatives > 0 else None,
            remove_accidental_hits=r.remove_accidental_hits,
        )
        self.strategy, self.logq = n.strategy, r.logq
        self.loss_tracker = tf.keras.metrics.Mean(name="loss")
        if r.logq == "counts":
            self.unigram = tf.constant(unigram_probabilities(item_counts))
        elif r.logq == "streaming":
            self.estimator = StreamingFrequencyEstimator(r.estimator_buckets, r.estimator_alpha,
                                                         cfg.training.batch_size, name="frequency")
        if n.strategy == "cbns":
            size, dim = n.cbns_memory_size, m.embedding_dim
            # FIFO memory bank, oldest row first; the newest `bank_count` rows are valid.
            self.bank_embeddings = self.add_weight(name="bank_embeddings", shape=[size, dim], dtype=tf.float32,
                                                   initializer="zeros", trainable=False)
            self.bank_ids = self.add_weight(name="bank_ids", shape=[size], dtype=tf.int32,
                                            initializer="zeros", trainable=False)
            self.bank_log_q = self.add_weight(name="bank_log_q", shape=[size], dtype=tf.float32,
                                              initializer="zeros", trainable=False)
            self.bank_count = self.add_weight(name="bank_count", shape=[], dtype=tf.int32,
                                              initializer="zeros", trainable=False)

    # --- pieces -------------------------------------------------------------------------------

    def steps(self) -> tf.Tensor:
        """Optimizer steps applied so far (0 before `compile`): the CBNS warm-up clock."""
        optimizer = getattr(self, "optimizer", None)
        return tf.cast(optimizer.iterations, tf.int64) if optimizer is not None else tf.constant(0, tf.int64)

    def probability(self, items: tf.Tensor) -> tf.Tensor | None:
        """Per-draw in-batch (unigram) sampling probability of items; None when logQ is off."""
        if self.logq == "counts":
            return tf.gather(self.unigram, items)
        if self.logq == "streaming":
            return self.estimator.probability(items)
        return None

    def bank(self) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(embeddings, ids, log q) of the valid bank rows, oldest first; none before warm-up."""
        size = self.cfg.negatives.cbns_memory_size
        warm = self.steps() >= self.cfg.negatives.cbns_warmup_steps
        valid = tf.where(warm, self.bank_count, 0)
        start = size - valid  # empty slots are never read: only the newest `valid` rows
        return (tf.stop_gradient(self.bank_embeddings[start:]), self.bank_ids[start:],
                tf.stop_gradient(self.bank_log_q[start:]))

    def enqueue(self, embeddings: tf.Tensor, ids: tf.Tensor, log_q: tf.Tensor) -> None:
        """Appends a batch to the bank, dropping the oldest rows beyond the memory size."""
        size = self.cfg.negatives.cbns_memory_size
        self.bank_embeddings.assign(tf.concat([self.bank_embeddings, tf.stop_gradient(embeddings)], 0)[-size:])
        self.bank_ids.assign(tf.concat([self.bank_ids, ids], 0)[-size:])
        self.bank_log_q.assign(tf.concat([self.bank_log_q, log_q], 0)[-size:])
        self.bank_count.assign(tf.minimum(self.bank_count + tf.shape(ids)[0], size))

    def negative_embeddings(self, ids: tf.Tensor, training=False) -> tf.Tensor:
        """Embeddings of the uniform negatives: only those B' rows are encoded, never the corpus."""
        return self.candidate_tower(ids, training=training)

    # --- training step ------------------------------------------------------------------------

    @property
    def metrics(self):
        return [self.loss_tracker]

    def train_step(self, features):
        """Gradients of the batch SUM, reported as the epoch's mean loss per query.

        TFRS's default loss sums over the batch, and learning rates from TFRS examples (the
        tutorial's Adagrad 0.1) are tuned for that scale, so the gradient follows it; the
        logged loss is the per-query mean so runs with different batch sizes compare.
        """
        batch = tf.cast(tf.shape(features["item"])[0], tf.float32)
        with tf.GradientTape() as tape:
            loss = self.compute_loss(features, training=True)
            objective = loss * batch + (tf.add_n(self.losses) if self.losses else 0.0)
        gradients = tape.gradient(objective, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        self.loss_tracker.update_state(loss, sample_weight=batch)
        return {"loss": self.loss_tracker.result()}

    # --- loss ---------------------------------------------------------------------------------

    def compute_loss(self, features: dict, training=False) -> tf.Tensor:
        """Sampled-softmax cross-entropy, a (weighted) mean per query.

        Only training=True changes state: the streaming estimator sees the batch before its
        probabilities are read, and the batch enters the CBNS bank after the loss that used
        the bank is computed (so a batch never serves as its own cross-batch negatives).
        """
        items = tf.cast(features["item"], tf.int32)
        query_features = {"user": features["user"]}
        if self.cfg.model.history_length > 0:
            if "history" not in features:
                raise ValueError("compute_loss: model.history_length > 0 needs features['history'] "
                                 "(int32 [batch, history_length], 0 = padding)")
            query_features["history"] = features["history"]
        queries = self.query_tower(query_features, training=training)
        positives = self.candidate_tower(items, training=training)

        if training and self.logq == "streaming":
            self.estimator.update(items, self.steps() + 1)
        p = self.probability(items)

        candidates, ids, q = positives, items, p
        extra_ids = None
        if self.strategy == "mns":
            if "uniform_negatives" not in features:
                raise ValueError("compute_loss: negatives.strategy mns needs features['uniform_negatives'] "
                                 "(corpus-uniform item indices from the training stream)")
            extra_ids = tf.cast(features["uniform_negatives"], tf.int32)
            candidates = tf.concat([positives, self.negative_embeddings(extra_ids, training=training)], 0)
            ids = tf.concat([items, extra_ids], 0)
            if p is not None:
                b = tf.cast(tf.shape(items)[0], tf.float32)
                b_uniform = tf.cast(tf.shape(extra_ids)[0], tf.float32)
                p_all = tf.concat([p, self.probability(extra_ids)], 0)
                # Every column is a draw from the mixture of B in-batch (unigram p_j) and B'
                # uniform (1/N) samples, so each gets  q_j = (B·p_j + B'/N) / (B + B').
                q = (b * p_all + b_uniform / self.num_items) / (b + b_uniform)
        elif self.strategy == "cbns":
            bank_embeddings, extra_ids, bank_log_q = self.bank()
            candidates = tf.concat([positives, bank_embeddings], 0)
            ids = tf.concat([items, extra_ids], 0)
            if p is not None:
                q = tf.concat([p, tf.exp(bank_log_q)], 0)

        score_mask = None
        if extra_ids is not None:
            # An extra negative with the query's own positive id is an accidental hit: always masked.
            batch = tf.ones([tf.shape(items)[0], tf.shape(items)[0]], tf.bool)
            score_mask = tf.concat([batch, items[:, None] != extra_ids[None, :]], axis=1)

        loss = self.task(queries, candidates, sample_weight=features.get("weight"),
                         candidate_sampling_probability=q, candidate_ids=ids,
                         compute_metrics=False, compute_batch_metrics=False, score_mask=score_mask)

        if training and self.strategy == "cbns":
            with tf.control_dependencies([loss]):
                log_q = tf.math.log(p) if p is not None else tf.zeros_like(items, tf.float32)
                self.enqueue(positives, items, log_q)
        return loss


def build_model(cfg: Config, split: Split, model_cls: type[TwoTowerModel] = TwoTowerModel) -> TwoTowerModel:
    """The model for `cfg` over `split`'s dataset; logQ "counts" uses the training item counts."""
    data, m = split.dataset, cfg.model
    for kind, wanted, available in (("user", m.user_features, data.user_features),
                                    ("item", m.item_features, data.item_features)):
        if wanted and not available:
            raise ConfigError(f"model.{kind}_features: dataset {data.name!r} has no {kind} features "
                             f"(set model.{kind}_features: false)")
    return model_cls(
        cfg, data.num_users, data.num_items, split.item_counts(),
        user_features=data.user_features if m.user_features else None,
        item_features=data.item_features if m.item_features else None,
    )
