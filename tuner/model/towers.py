"""The query and candidate towers of the two-tower model.

Side features live inside the towers as constant lookup tables indexed by user or item
index, so a tower needs nothing but indices: the candidate tower can encode uniform
negatives, CBNS bank entries and the whole corpus from item indices alone. Index 0 is
padding everywhere (empty history slots, empty bag slots) and is masked out of every pooling;
in the user and item id tables, row 0 is the trained out-of-vocabulary row (`OovEmbedding`).
"""
from __future__ import annotations

import tuner  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import tensorflow as tf

from tuner.config import POOLINGS
from tuner.data.types import Feature

RECENT_HALF_LIFE = 3.0  # items: the initial weight halves every 3 steps back (then learned)


def masked_mean(x: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Mean of x [B, L, d] over the L slots where mask [B, L] is true; zeros for an all-padding row."""
    m = tf.cast(mask, x.dtype)[..., None]
    return tf.reduce_sum(x * m, axis=1) / tf.maximum(tf.reduce_sum(m, axis=1), 1.0)


def in_vocabulary(index: tf.Tensor, rows: int) -> tf.Tensor:
    """int32 row of each index of a table of `rows` rows: the index where 0 < index < rows, else 0,
    the unknown row. Ids beyond the vocabulary (a stale or foreign index, an int64 past int32) then
    read the unknown row instead of failing the lookup (CPU gathers raise on them; GPUs return zeros)."""
    index = tf.cast(index, tf.int64)  # compared before the int32 cast, which would wrap 2**32 + i to i
    return tf.cast(tf.where((index > 0) & (index < rows), index, 0), tf.int32)


class FeatureEmbedding(tf.keras.layers.Layer):
    """One categorical feature of a user or item: table lookup, embedding, masked mean over the bag.

    A single-category feature is a bag of one, so an unknown value (0) embeds to zeros
    rather than to a learned "unknown" vector: one code path for both shapes.
    """

    def __init__(self, name: str, feature: Feature, dim: int, **kwargs):
        super().__init__(name=f"feature_{name}", **kwargs)
        values = np.asarray(feature.values)
        if values.ndim == 1:
            values = values[:, None]
        if values.ndim != 2 or (values.size and (values.min() < 0 or values.max() >= feature.vocab_size)):
            raise ValueError(f"feature {name!r}: values must be a [rows] or [rows, L] array of categories "
                             f"in 0..{feature.vocab_size - 1} (vocab_size {feature.vocab_size})")
        self.table = tf.constant(values.astype(np.int32))
        self.embedding = tf.keras.layers.Embedding(feature.vocab_size, dim)

    def call(self, index: tf.Tensor) -> tf.Tensor:
        bag = tf.gather(self.table, in_vocabulary(index, self.table.shape[0]))
        return masked_mean(self.embedding(bag), bag != 0)


class OovEmbedding(tf.keras.layers.Embedding):
    """An id embedding whose row 0 is a trained out-of-vocabulary row.

    Indices never seen in training (`known[i]` false), 0 (unknown), -1 (an id a served model
    never heard of, kept apart from history padding) and indices beyond the table all read row 0.
    While training, each id is also replaced by row 0 with probability `id_dropout`, so that row
    learns an average user or item: an unseen one is then scored with it plus its side features,
    not with a row that no gradient ever reached. `known`: bool [rows], true for indices with a
    training interaction; None means every index but 0.
    """

    def __init__(self, rows: int, dim: int, known: np.ndarray | None = None, id_dropout: float = 0.0, **kwargs):
        super().__init__(rows, dim, **kwargs)
        known = np.arange(rows) > 0 if known is None else np.asarray(known, bool)
        if known.shape != (rows,) or known[0]:
            raise ValueError(f"{self.name}: known must be a bool [{rows}] array with known[0] false (0 is the OOV row)")
        if not 0 <= id_dropout < 1:
            raise ValueError(f"{self.name}: id_dropout {id_dropout!r} must be in [0, 1)")
        self.known = tf.constant(known)
        self.id_dropout = float(id_dropout)

    def call(self, index: tf.Tensor, training=False) -> tf.Tensor:
        row = in_vocabulary(index, self.input_dim)
        row = tf.where(tf.gather(self.known, row), row, 0)
        if training and self.id_dropout > 0:
            row = tf.where(tf.random.uniform(tf.shape(row)) < self.id_dropout, 0, row)
        return super().call(row)


class HistoryPooling(tf.keras.layers.Layer):
    """Pools item embeddings [B, N, d] of a left-padded history into [B, d], ignoring padding.

    mean / max: over the valid items. attention: softmax over valid items of a learned additive
    score (the last Dense's kernel is the learned query). gru: the final state of a GRU that
    skips masked steps. recent: softmax over valid items of a learned weight per age, which
    starts as an exponential decay with the item's age (RECENT_HALF_LIFE items): the next item
    follows the last few more than the rest (leave-last-out). A history with no valid items pools
    to zeros in every mode.
    """

    def __init__(self, pooling: str, dim: int, **kwargs):
        super().__init__(name=f"history_{pooling}", **kwargs)
        if pooling not in POOLINGS:
            raise ValueError(f"model.history_pooling: {pooling!r} is not one of {', '.join(POOLINGS)}")
        self.pooling = pooling
        if pooling == "attention":
            self.project = tf.keras.layers.Dense(dim, activation="tanh")
            self.score = tf.keras.layers.Dense(1, use_bias=False)
        elif pooling == "gru":
            self.gru = tf.keras.layers.GRU(dim)

    def build(self, input_shape):
        if self.pooling == "recent":  # slot N - 1 holds the most recent item (histories are left-padded)
            age = np.arange(int(input_shape[1]) - 1, -1, -1, dtype=np.float32)
            self.position_logits = self.add_weight(
                name="position_logits", shape=[len(age)],
                initializer=tf.keras.initializers.Constant(-np.log(2.0) / RECENT_HALF_LIFE * age))
        super().build(input_shape)

    def weights_of(self, mask: tf.Tensor) -> tf.Tensor:
        """recent pooling's weights [B, N] over the slots where mask [B, N] is true (each row sums to 1).

        An item's age counts the valid items after it, so padding between items is skipped (as
        the GRU skips it) and the latest valid item always reads the last position's weight."""
        later = tf.cumsum(tf.cast(mask, tf.int32), axis=1, exclusive=True, reverse=True)
        logits = tf.gather(self.position_logits, tf.shape(mask)[1] - 1 - later)
        return tf.nn.softmax(tf.where(mask, logits, -1e9), axis=1) * tf.cast(mask, tf.float32)

    def call(self, x: tf.Tensor, mask: tf.Tensor, training=False) -> tf.Tensor:
        any_valid = tf.reduce_any(mask, axis=1, keepdims=True)
        if self.pooling == "mean":
            return masked_mean(x, mask)
        if self.pooling == "max":
            hidden = tf.where(mask[..., None], x, tf.float32.min)
            return tf.where(any_valid, tf.reduce_max(hidden, axis=1), 0.0)
        if self.pooling == "attention":
            logits = tf.squeeze(self.score(self.project(x)), -1)
            # Masked slots get weight exactly 0 (exp underflows), so padding cannot leak in.
            weights = tf.nn.softmax(tf.where(mask, logits, -1e9), axis=1) * tf.cast(mask, x.dtype)
            return tf.reduce_sum(x * weights[..., None], axis=1)
        if self.pooling == "recent":
            return tf.reduce_sum(x * self.weights_of(mask)[..., None], axis=1)
        return tf.where(any_valid, self.gru(x, mask=mask, training=training), 0.0)


class MLP(tf.keras.layers.Layer):
    """ReLU hidden layers with dropout, then a linear projection to the embedding size."""

    def __init__(self, hidden: list[int], out_dim: int, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.hidden = [tf.keras.layers.Dense(n, activation="relu") for n in hidden]
        self.dropout = [tf.keras.layers.Dropout(dropout) for _ in hidden] if dropout > 0 else []
        self.out = tf.keras.layers.Dense(out_dim)

    def call(self, x: tf.Tensor, training=False) -> tf.Tensor:
        for i, layer in enumerate(self.hidden):
            x = layer(x)
            if self.dropout:
                x = self.dropout[i](x, training=training)
        return self.out(x)


def _head(width: int, hidden: list[int], dim: int, dropout: float, name: str) -> MLP | None:
    """The MLP when one is needed: layers were asked for, or the concatenation is not `dim` wide."""
    return MLP(hidden, dim, dropout, name=name) if hidden or width != dim else None


def _finish(x: tf.Tensor, head: MLP | None, normalize: bool, training) -> tf.Tensor:
    if head is not None:
        x = head(x, training=training)
    return tf.math.l2_normalize(x, axis=-1) if normalize else x


class CandidateTower(tf.keras.layers.Layer):
    """item int32[B] -> [B, d]: item-id embedding, optional item features, optional MLP.

    `known_items`, `id_dropout`: the out-of-vocabulary rule of `OovEmbedding` for the item id."""

    def __init__(self, num_items: int, dim: int, features: dict[str, Feature], hidden: list[int],
                 dropout: float, normalize: bool, known_items: np.ndarray | None = None,
                 id_dropout: float = 0.0, **kwargs):
        super().__init__(name="candidate_tower", **kwargs)
        self.item_embedding = OovEmbedding(num_items + 1, dim, known_items, id_dropout, name="item_embedding")
        self.features = [FeatureEmbedding(n, f, dim) for n, f in sorted(features.items())]
        self.head = _head(dim * (1 + len(self.features)), hidden, dim, dropout, "candidate_mlp")
        self.normalize = normalize

    def call(self, item: tf.Tensor, training=False) -> tf.Tensor:
        item = tf.cast(item, tf.int32)
        parts = [self.item_embedding(item, training=training)] + [f(item) for f in self.features]
        return _finish(tf.concat(parts, axis=-1), self.head, self.normalize, training)


class QueryTower(tf.keras.layers.Layer):
    """{"user": int32[B], "history": int32[B, N]} -> [B, d]; a missing "history" pools like an empty one.

    User-id embedding, optional user features and optional pooled history, concatenated, then
    an optional MLP. `history_embedding` is the candidate tower's item embedding layer when the
    config shares it (the same variables serve both towers), else a separate table.
    `known_users`, `id_dropout`: the out-of-vocabulary rule of `OovEmbedding` for the user id.
    `last_item`: a table of its own for the history's most recent item, concatenated beside the
    pooled history: "what came after this item" is learned apart from what the item is, so the
    query can follow transitions (a → b without b → a), which a shared table pooled cannot.
    """

    def __init__(self, num_users: int, dim: int, features: dict[str, Feature],
                 history_embedding: tf.keras.layers.Embedding | None, pooling: str,
                 hidden: list[int], dropout: float, normalize: bool, known_users: np.ndarray | None = None,
                 id_dropout: float = 0.0, last_item: OovEmbedding | None = None, **kwargs):
        super().__init__(name="query_tower", **kwargs)
        self.user_embedding = OovEmbedding(num_users + 1, dim, known_users, id_dropout, name="user_embedding")
        self.features = [FeatureEmbedding(n, f, dim) for n, f in sorted(features.items())]
        self.history_embedding = history_embedding
        self.pooling = HistoryPooling(pooling, dim) if history_embedding is not None else None
        self.last_item = last_item
        width = dim * (1 + len(self.features) + (history_embedding is not None) + (last_item is not None))
        self.head = _head(width, hidden, dim, dropout, "query_mlp")
        self.normalize = normalize

    def call(self, features: dict, training=False) -> tf.Tensor:
        user = tf.cast(features["user"], tf.int32)
        parts = [self.user_embedding(user, training=training)] + [f(user) for f in self.features]
        if self.history_embedding is not None:
            if "history" in features:
                history = tf.cast(features["history"], tf.int32)
                embedded = self.history_embedding(history, training=training)
                parts.append(self.pooling(embedded, history != 0, training=training))
                if self.last_item is not None:  # slot -1: the latest item (0, padding, reads the OOV row)
                    parts.append(self.last_item(history[:, -1], training=training))
            else:  # no history known (e.g. serving by user id alone): the same as an all-padding one
                parts.extend([tf.zeros_like(parts[0])] * (1 + (self.last_item is not None)))
        return _finish(tf.concat(parts, axis=-1), self.head, self.normalize, training)
