"""Export a trained two-tower model as a SavedModel that maps raw user ids to top-K raw item ids.

The candidate embeddings of the whole corpus are computed once at export time and stored in
the SavedModel, so serving is one query-tower call and one matmul, with no dataset needed.
Users the model never trained on, known to the dataset or not, are served through the
out-of-vocabulary user row (plus their side features, if the model uses them); unknown item ids
in a history read the out-of-vocabulary item row.
"""
from __future__ import annotations

from pathlib import Path

import tuner  # noqa: F401
import numpy as np
import tensorflow as tf

from tuner.data.types import Split
from tuner.errors import ConfigError


def _lookup(raw_ids: np.ndarray) -> tf.keras.layers.StringLookup:
    """Raw id -> our dense index: vocabulary order makes ids[i] -> i, unknown -> 0 (the OOV row)."""
    return tf.keras.layers.StringLookup(vocabulary=list(raw_ids[1:]), num_oov_indices=1, mask_token=None)


class Recommender(tf.Module):
    def __init__(self, model, split: Split, k: int):
        super().__init__()
        dataset = split.dataset
        self.query_tower = model.query_tower
        self.history_length = 0 if split.train.history is None else int(split.train.history.shape[1])
        self.user_lookup = _lookup(dataset.user_ids)
        self.item_lookup = _lookup(dataset.item_ids)
        self.trained_users = tf.Variable(split.user_counts() > 0, trainable=False, name="trained_users")
        self.uses_user_features = tf.Variable(bool(model.query_tower.features), trainable=False,
                                              name="uses_user_features")
        items = np.arange(1, dataset.num_items + 1, dtype=np.int32)
        embeddings = np.concatenate([
            model.candidate_tower(tf.constant(chunk), training=False).numpy()
            for chunk in np.array_split(items, max(1, len(items) // 65536))
        ])
        self.candidates = tf.Variable(embeddings, trainable=False, name="candidate_embeddings")
        self.item_ids = tf.constant(dataset.item_ids[1:].astype(str))
        titles = dataset.item_titles[1:] if dataset.item_titles is not None else dataset.item_ids[1:]
        self.titles = tf.constant(np.asarray(titles).astype(str))
        self.k = min(k, dataset.num_items)

    def _top_k(self, features):
        queries = self.query_tower(features, training=False)
        scores, index = tf.math.top_k(tf.matmul(queries, self.candidates, transpose_b=True), k=self.k)
        return {"item_ids": tf.gather(self.item_ids, index), "titles": tf.gather(self.titles, index),
                "scores": scores}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def user_index(self, user_id):
        """The dataset's index of each user id; 0 for ids the dataset does not have."""
        return self.user_lookup(user_id)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def is_trained_user(self, user_id):
        """False for users without training interactions: they read the out-of-vocabulary row."""
        return tf.gather(self.trained_users, self.user_lookup(user_id))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def by_user(self, user_id):
        return self._top_k({"user": tf.cast(self.user_lookup(user_id), tf.int32)})

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([None, None], tf.string)])
    def by_user_and_history(self, user_id, history):
        """`history`: the user's most recent item ids, most recent last; "" pads."""
        index = tf.cast(self.item_lookup(history), tf.int32)
        # An id the dataset does not have is -1, not 0: it reads the OOV item row instead of
        # being skipped as padding.
        index = tf.where((index == 0) & (history != ""), -1, index)
        width = tf.shape(index)[1]
        pad = tf.maximum(self.history_length - width, 0)
        index = tf.pad(index, [[0, 0], [pad, 0]])[:, -self.history_length:]
        return self._top_k({"user": tf.cast(self.user_lookup(user_id), tf.int32), "history": index})


def export_model(model, split: Split, path: str | Path, k: int = 100) -> Path:
    module = Recommender(model, split, k)
    history = module.history_length > 0
    signature = module.by_user_and_history if history else module.by_user
    tf.saved_model.save(module, str(path), signatures={"serving_default": signature})
    return Path(path)


def recommend(model_dir: str | Path, user_id: str, k: int, history: list[str] | None = None
              ) -> tuple[list[tuple[str, str, float]], str | None]:
    """(item id, title, score) of the top `k` items for `user_id` from an exported model, and for a
    user the model never trained on, one line saying how it was served (None otherwise)."""
    loaded = _load(model_dir)
    note = None
    if not bool(loaded.is_trained_user(tf.constant([user_id]))[0]):
        known = int(loaded.user_index(tf.constant([user_id]))[0]) > 0
        features = known and bool(loaded.uses_user_features.numpy())
        note = (f"user {user_id!r} " + ("has no training interactions" if known else "is not in the model's data")
                + ": served through the out-of-vocabulary user row (trained when model.id_dropout > 0)"
                + (" plus the user's side features" if features else ""))
    serve = loaded.signatures["serving_default"]
    args = {"user_id": tf.constant([user_id])}
    if "history" in serve.structured_input_signature[1]:
        args["history"] = tf.constant([history or [""]])
    out = serve(**args)
    rows = zip(out["item_ids"][0].numpy(), out["titles"][0].numpy(), out["scores"][0].numpy())
    return [(i.decode(), t.decode(), float(s)) for i, t, s in rows][:k], note


def _load(model_dir: str | Path):
    """The SavedModel in `model_dir`, refused in one line if it is not one `export_model` wrote."""
    try:
        loaded = tf.saved_model.load(str(model_dir))
    except (OSError, ValueError, tf.errors.OpError) as exc:
        raise ConfigError(f"--model: {model_dir}: cannot load the model: {str(exc).splitlines()[0][:200]}") from None
    needed = ("is_trained_user", "user_index", "uses_user_features")
    missing = [name for name in needed if not hasattr(loaded, name)]
    if missing or "serving_default" not in loaded.signatures:
        raise ConfigError(f"--model: {model_dir}: not a model exported by this version of tuner "
                          f"(it has no {(missing or ['serving_default'])[0]}); train it again with tuner train")
    return loaded
