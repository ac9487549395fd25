"""A user's towers module for tests/test_custom_towers.py: `small_towers` works; the others each
break one promise the towers check enforces."""
import tuner  # noqa: F401  (tf-keras, before TensorFlow loads)
import tensorflow as tf

from tuner.model.towers import masked_mean


class SmallQuery(tf.keras.layers.Layer):
    """User id, user features and mean-pooled history, concatenated, then a hidden layer."""

    def __init__(self, context, item_embedding, width_extra=0):
        super().__init__()
        params = context.params
        self.user = context.user_embedding(params["units"])
        self.user_features = context.user_feature_embeddings(params["units"])
        self.items = item_embedding  # the candidate tower's table when the config shares it
        self.hidden = tf.keras.layers.Dense(params["units"], activation=params.get("activation", "relu"))
        self.dropout = tf.keras.layers.Dropout(params.get("dropout", 0.0))
        self.out = tf.keras.layers.Dense(context.embedding_dim + width_extra)

    def call(self, inputs, training=False):
        user = inputs["user"]
        parts = [self.user(user, training=training)] + [f(user) for f in self.user_features]
        if "history" in inputs:
            history = inputs["history"]
            parts.append(masked_mean(self.items(history, training=training), history != 0))
        x = self.dropout(self.hidden(tf.concat(parts, -1)), training=training)
        return self.out(x)


class SmallCandidate(tf.keras.layers.Layer):
    def __init__(self, context, item_embedding):
        super().__init__()
        self.item = item_embedding
        self.item_features = context.item_feature_embeddings(context.params["units"])
        self.out = tf.keras.layers.Dense(context.embedding_dim)

    def call(self, item, training=False):
        parts = [self.item(item, training=training)] + [f(item) for f in self.item_features]
        return self.out(tf.concat(parts, -1))


def small_towers(context):
    """Query and candidate towers sized by model.params.units; `width_extra` > 0 breaks the width."""
    units = context.params["units"]
    candidate_items = context.item_embedding(units)
    history_items = candidate_items if context.share_item_embedding else context.item_embedding(units, "history")
    query = SmallQuery(context, history_items, context.params.get("width_extra", 0))
    return query, SmallCandidate(context, candidate_items)


def one_tower(context):
    return small_towers(context)[0]


def keras3_towers(context):
    import keras  # Keras 3: TFRS cannot train its layers

    return keras.layers.Dense(context.embedding_dim), keras.layers.Dense(context.embedding_dim)


def raising_towers(context):
    raise ValueError(f"units must be even, got {context.params['units']}")


class NoTrainingArgument(tf.keras.layers.Layer):
    """Holds dropout but its call takes no `training`."""

    def __init__(self, context):
        super().__init__()
        self.user = context.user_embedding()
        self.dropout = tf.keras.layers.Dropout(0.5)

    def call(self, inputs):
        return self.dropout(self.user(inputs["user"]))


def no_training_towers(context):
    return NoTrainingArgument(context), small_towers(context)[1]


class AlwaysDropout(tf.keras.layers.Layer):
    """Ignores `training`: dropout runs at inference too."""

    def __init__(self, context):
        super().__init__()
        self.item = context.item_embedding()
        self.dropout = tf.keras.layers.Dropout(0.5)

    def call(self, item, training=False):
        return self.dropout(self.item(item), training=True)


def random_inference_towers(context):
    return small_towers(context)[0], AlwaysDropout(context)
