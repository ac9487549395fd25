"""Towers of their own for `model.towers`: a deep & cross query tower and a deep candidate tower.

Query: the user id, the user's side features and the mean of their last `model.history_length`
items, each embedded to `params.feature_dim`, concatenated into x0; `params.cross_layers` DCN
cross layers (Wang et al. 2021, `tfrs.layers.dcn.Cross`: x_{l+1} = x0 ⊙ (W x_l + b) + x_l, low
rank when `params.projection_dim` > 0) model the feature crosses a concatenation + MLP learns
slowly; then the ReLU layers of `params.deep_layers` with dropout, and a linear projection to
`model.embedding_dim`. Candidate: the item id and the item's side features, concatenated, the
ReLU layers of `params.candidate_layers`, a linear projection.

Ids go through `context.user_embedding()` / `item_embedding()`, so users and items without
training interactions read the trained out-of-vocabulary row like the built-in towers do, and
history padding (0) and unknown served ids (-1) are safe.

    model:  # experiments/custom_towers/dcn.yaml and the built-in space custom_towers
      towers: tuner.examples.towers:dcn_towers
      params: {feature_dim: 32, cross_layers: 2, projection_dim: 0, deep_layers: [64], candidate_layers: [], dropout: 0.1}

It lives in the package, named by module, so the shipped space finds it from an installed
`tuner` as well as from a checkout; a user's own towers may as well be a file beside the config.
"""
import tuner  # noqa: F401  (tf-keras: TFRS needs it, and must be chosen before TensorFlow loads)
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tuner.model.towers import masked_mean


def _deep(sizes, dropout):
    """ReLU layers, each followed by dropout (none at 0)."""
    layers = []
    for size in sizes:
        layers.append(tf.keras.layers.Dense(size, activation="relu"))
        if dropout > 0:
            layers.append(tf.keras.layers.Dropout(dropout))
    return layers


def _run(layers, x, training):
    for layer in layers:
        x = layer(x, training=training) if isinstance(layer, tf.keras.layers.Dropout) else layer(x)
    return x


class DeepCrossQuery(tf.keras.layers.Layer):
    """{"user": int32 [B], "history": int32 [B, N]} -> [B, embedding_dim]."""

    def __init__(self, context, history_items, feature_dim, cross_layers, projection_dim, deep_layers, dropout):
        super().__init__(name="deep_cross_query")
        self.user = context.user_embedding(feature_dim)
        self.user_features = context.user_feature_embeddings(feature_dim)
        self.history_items = history_items  # None without a history
        self.crosses = [tfrs.layers.dcn.Cross(projection_dim=projection_dim or None,
                                              kernel_initializer="glorot_uniform") for _ in range(cross_layers)]
        self.deep = _deep(deep_layers, dropout)
        self.out = tf.keras.layers.Dense(context.embedding_dim)

    def call(self, inputs, training=False):
        user = inputs["user"]
        parts = [self.user(user, training=training)] + [f(user) for f in self.user_features]
        if self.history_items is not None:
            history = inputs["history"]
            parts.append(masked_mean(self.history_items(history, training=training), history != 0))
        x0 = tf.concat(parts, axis=-1)
        x = x0
        for cross in self.crosses:
            x = cross(x0, x)
        return self.out(_run(self.deep, x, training))


class DeepCandidate(tf.keras.layers.Layer):
    """item int32 [B] -> [B, embedding_dim]."""

    def __init__(self, context, items, feature_dim, layers, dropout):
        super().__init__(name="deep_candidate")
        self.items = items
        self.item_features = context.item_feature_embeddings(feature_dim)
        self.deep = _deep(layers, dropout)
        self.out = tf.keras.layers.Dense(context.embedding_dim)

    def call(self, item, training=False):
        parts = [self.items(item, training=training)] + [f(item) for f in self.item_features]
        return self.out(_run(self.deep, tf.concat(parts, axis=-1), training))


def dcn_towers(context):
    """(query, candidate) for `tuner`; `context.params` holds the keys in the module docstring."""
    p = {"feature_dim": 32, "cross_layers": 2, "projection_dim": 0, "deep_layers": [64], "candidate_layers": [],
         "dropout": 0.0, **context.params}
    unknown = sorted(set(p) - {"feature_dim", "cross_layers", "projection_dim", "deep_layers", "candidate_layers",
                               "dropout"})
    if unknown:
        raise ValueError(f"unknown model.params key {unknown[0]!r}")
    items = context.item_embedding(p["feature_dim"])
    history = None
    if context.history_length > 0:
        history = items if context.share_item_embedding else context.item_embedding(p["feature_dim"], "history")
    query = DeepCrossQuery(context, history, p["feature_dim"], p["cross_layers"], p["projection_dim"],
                           p["deep_layers"], p["dropout"])
    return query, DeepCandidate(context, items, p["feature_dim"], p["candidate_layers"], p["dropout"])
