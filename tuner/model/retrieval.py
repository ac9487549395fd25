"""The two-tower retrieval model: towers, negatives (in-batch, MNS, CBNS, full), logQ, hard negatives.

The loss is a sampled softmax built from the pieces in `softmax.py` (TFRS's, without its clip
of q at 1e-6): scores divided by the temperature, minus log q per column, accidental hits
masked, optionally only the hardest negatives. This module decides which columns exist (the
batch's positives, then MNS draws or CBNS bank rows as extra negatives for every query) and
what q each column gets; `full` scores every query against the whole catalog instead (an exact
softmax, nothing sampled). Top-K metrics are never computed here: evaluation is a separate
full-corpus pass (docs/design.md, "Metrics").
"""
from __future__ import annotations

import tuner  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tuner.config import Config
from tuner.data.types import Split
from tuner.errors import ConfigError
from tuner.model.bank import CrossBatchBank
from tuner.model.custom import TowersContext, user_towers
from tuner.model.frequency import StreamingFrequencyEstimator
from tuner.model.regularization import l2_penalty, regularized_weights
from tuner.model.sampling import mns_mixture_probability, unigram_probabilities, window_counts
from tuner.model.softmax import (accidental_hits, balanced_cross_batch_loss, catalog_cross_entropy,
                                 corrected_logits, cross_entropy, log_probability)
from tuner.model.towers import CandidateTower, OovEmbedding, QueryTower


class TwoTowerModel(tfrs.Model):
    """Query and candidate towers trained with a sampled softmax over in-batch, MNS or CBNS columns.

    `compute_loss` features: "user" int32[B], "item" int32[B], optional "weight" float32[B],
    "history" int32[B, N] when the config has a history, "uniform_negatives" int32[B'] for MNS.
    `logq_counts`: the counts logQ "counts" reads, when not `item_counts` (`retrieval.logq_window`).
    """

    def __init__(self, cfg: Config, num_users: int, num_items: int, item_counts: np.ndarray,
                 user_features: dict | None = None, item_features: dict | None = None,
                 user_counts: np.ndarray | None = None, logq_counts: np.ndarray | None = None):
        super().__init__()
        m, r, n = cfg.model, cfg.retrieval, cfg.negatives
        self.cfg = cfg
        self.num_items = int(num_items)
        # Users (and items) without training interactions read the trained OOV row 0.
        known_users = None if user_counts is None else np.asarray(user_counts) > 0
        if m.towers is not None:  # the config's own towers (checked on a tiny batch); the rest is unchanged
            self.query_tower, self.candidate_tower = user_towers(cfg, TowersContext.of(
                cfg, num_users, num_items, user_features or {}, item_features or {}, known_users,
                np.asarray(item_counts) > 0))
        else:
            self.candidate_tower = CandidateTower(
                num_items, m.embedding_dim, item_features or {}, m.candidate_layers, m.dropout, m.normalize,
                known_items=np.asarray(item_counts) > 0, id_dropout=m.id_dropout)
            history = None
            if m.history_length > 0:
                history = (self.candidate_tower.item_embedding if m.share_item_embedding else
                           OovEmbedding(num_items + 1, m.embedding_dim, np.asarray(item_counts) > 0, m.id_dropout,
                                        name="history_embedding"))
            last_item = OovEmbedding(num_items + 1, m.embedding_dim, np.asarray(item_counts) > 0, m.id_dropout,
                                     name="last_item_embedding") if m.last_item else None
            self.query_tower = QueryTower(num_users, m.embedding_dim, user_features or {}, history,
                                          m.history_pooling, m.query_layers, m.dropout, m.normalize,
                                          known_users=known_users, id_dropout=m.id_dropout, last_item=last_item)
        self.temperature, self.hard_negatives = r.temperature, r.hard_negatives
        self.remove_accidental_hits = r.remove_accidental_hits
        self.strategy, self.logq, self.logq_weight = n.strategy, r.logq, r.logq_weight
        self.balanced_cbns = n.strategy == "cbns" and n.cbns_gradient == "balanced"
        self.loss_tracker = tf.keras.metrics.Mean(name="loss")
        if r.logq == "counts":
            self.unigram = tf.constant(unigram_probabilities(item_counts if logq_counts is None else logq_counts))
        elif r.logq == "streaming":
            self.estimator = StreamingFrequencyEstimator(r.estimator_buckets, r.estimator_alpha,
                                                         cfg.training.batch_size, name="frequency")
        if n.strategy == "full":  # the config refuses streaming here: the prior comes from counts
            self.catalog = tf.range(1, self.num_items + 1, dtype=tf.int32)
            self.catalog_prior = None if r.logq == "none" else tf.constant(
                full_softmax_prior(item_counts, logq_counts, r.logq_weight)[1:])
        if n.strategy == "cbns":
            self.cbns_bank = CrossBatchBank(n.cbns_memory_size, m.embedding_dim, name="cbns_bank")

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
        """(embeddings, ids, log q) of the bank rows in use: none before `cbns_warmup_steps` steps."""
        return self.cbns_bank.read(self.steps() >= self.cfg.negatives.cbns_warmup_steps)

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
        logged loss is the per-query mean so runs with different batch sizes compare. The
        `model.l2` penalty joins the per-query mean before that scaling, so λ means the same
        at every batch size; the logged loss leaves it out.
        """
        batch = tf.cast(tf.shape(features["item"])[0], tf.float32)
        with tf.GradientTape() as tape:
            loss = self.compute_loss(features, training=True)
            penalty = l2_penalty(regularized_weights(self.query_tower, self.candidate_tower), self.cfg.model.l2)
            objective = (loss + penalty) * batch + (tf.add_n(self.losses) if self.losses else 0.0)
        gradients = tape.gradient(objective, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        self.loss_tracker.update_state(loss, sample_weight=batch)
        return {"loss": self.loss_tracker.result()}

    # --- loss ---------------------------------------------------------------------------------

    def compute_loss(self, features: dict, training=False) -> tf.Tensor:
        """Sampled-softmax cross-entropy, a (weighted) mean per query.

        Columns: the batch's positives, then the MNS draws or the CBNS bank rows; each scored
        u·v / τ − log q. With `retrieval.remove_accidental_hits`, every column but the query's
        own that holds the query's positive item is masked, wherever it was sampled from.
        Balanced CBNS trains each tower with its own softmax (see `balanced_cross_batch_loss`).
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
        if self.strategy == "full":
            return self.full_softmax_loss(queries, items, features.get("weight"), training)
        positives = self.candidate_tower(items, training=training)

        if training and self.logq == "streaming":
            self.estimator.update(items, self.steps() + 1)
        p = self.probability(items)
        batch_log_q = None if p is None else log_probability(p)

        candidates, ids, log_q = positives, items, batch_log_q
        if self.strategy == "mns":
            if "uniform_negatives" not in features:
                raise ValueError("compute_loss: negatives.strategy mns needs features['uniform_negatives'] "
                                 "(corpus-uniform item indices from the training stream)")
            extra_ids = tf.cast(features["uniform_negatives"], tf.int32)
            candidates = tf.concat([positives, self.negative_embeddings(extra_ids, training=training)], 0)
            ids = tf.concat([items, extra_ids], 0)
            if p is not None:
                log_q = log_probability(mns_mixture_probability(
                    tf.concat([p, self.probability(extra_ids)], 0), tf.cast(tf.shape(items)[0], tf.float32),
                    tf.cast(tf.shape(extra_ids)[0], tf.float32), self.num_items))
        elif self.strategy == "cbns":
            bank_embeddings, bank_ids, bank_log_q = self.bank()
            candidates = tf.concat([positives, bank_embeddings], 0)
            ids = tf.concat([items, bank_ids], 0)
            if p is not None:
                log_q = tf.concat([batch_log_q, bank_log_q], 0)

        if log_q is not None and self.logq_weight != 1:
            # the softmax then learns u·v/τ ≈ log p(item | user) − (1 − w)·log q: w > 1 keeps popularity in the scores
            log_q = self.logq_weight * log_q
        hits = accidental_hits(items, ids) if self.remove_accidental_hits else None
        weight = features.get("weight")
        if self.balanced_cbns:
            loss = balanced_cross_batch_loss(queries, positives, bank_embeddings, self.temperature, log_q, hits,
                                             weight, self.hard_negatives)
        else:
            loss = cross_entropy(corrected_logits(queries, candidates, self.temperature, log_q), hits, weight,
                                 self.hard_negatives)

        if training and self.strategy == "cbns":
            with tf.control_dependencies([loss]):
                stored_log_q = batch_log_q if p is not None else tf.zeros_like(items, tf.float32)
                self.cbns_bank.enqueue(positives, items, stored_log_q)
        return loss

    def full_softmax_loss(self, queries: tf.Tensor, items: tf.Tensor, weight: tf.Tensor | None,
                          training=False) -> tf.Tensor:
        """Cross-entropy over the whole catalog: the candidate tower encodes all N items every step
        (with item features and layers too), and every item but the positive is a negative."""
        catalog = self.candidate_tower(self.catalog, training=training)
        logits = corrected_logits(queries, catalog, self.temperature, self.catalog_prior)
        return catalog_cross_entropy(logits, items, weight, self.hard_negatives)


def full_softmax_prior(item_counts: np.ndarray, logq_counts: np.ndarray | None, weight: float) -> np.ndarray:
    """The term a full softmax subtracts from item j's logit so that the towers learn the scores that
    an in-batch softmax with the same logQ settings learns: w·log q_window(j) − log q(j), float32[N + 1].

    In-batch columns are drawn by training frequency q, so subtracting w·log q_window makes the
    towers learn log p(j | user) − log q(j) + w·log q_window(j); the full softmax draws nothing
    (q is uniform, a constant), so the same scores need this whole term. It is 0 at w = 1 over the
    whole log (logQ is then exact and has nothing to correct); w > 1 keeps popularity in the scores,
    and a window favours items whose popularity rises toward the end of training.
    """
    log_q = np.log(unigram_probabilities(item_counts).astype(np.float64))
    window = log_q if logq_counts is None else np.log(unigram_probabilities(logq_counts).astype(np.float64))
    return (weight * window - log_q).astype(np.float32)


def build_model(cfg: Config, split: Split, model_cls: type[TwoTowerModel] = TwoTowerModel) -> TwoTowerModel:
    """The model for `cfg` over `split`'s dataset; logQ "counts" uses the training item counts (of the
    last `retrieval.logq_window` of the time-ordered training part), and users and items without
    training interactions read the out-of-vocabulary row."""
    data, m, window = split.dataset, cfg.model, cfg.retrieval.logq_window
    for kind, wanted, available in (("user", m.user_features, data.user_features),
                                    ("item", m.item_features, data.item_features)):
        if wanted and not available:
            raise ConfigError(f"model.{kind}_features: dataset {data.name!r} has no {kind} features "
                             f"(set model.{kind}_features: false)")
    return model_cls(
        cfg, data.num_users, data.num_items, split.item_counts(), user_counts=split.user_counts(),
        logq_counts=window_counts(split.train.item, data.num_items, window) if window < 1 else None,
        user_features=data.user_features if m.user_features else None,
        item_features=data.item_features if m.item_features else None,
    )
