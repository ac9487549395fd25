"""Export a trained two-tower model as a SavedModel that maps raw user ids to top-K raw item ids.

The candidate embeddings of the whole corpus are computed once at export time and stored in
the SavedModel, so serving is one query-tower call and one matmul, with no dataset needed.
"""
from __future__ import annotations

from pathlib import Path

import tuner  # noqa: F401
import numpy as np
import tensorflow as tf

from tuner.data.types import Split
from tuner.errors import ConfigError


def _lookup(raw_ids: np.ndarray) -> tf.keras.layers.StringLookup:
    """Raw id -> our dense index: vocabulary order makes ids[i] -> i, unknown -> 0 (padding)."""
    return tf.keras.layers.StringLookup(vocabulary=list(raw_ids[1:]), num_oov_indices=1, mask_token=None)


class Recommender(tf.Module):
    def __init__(self, model, split: Split, k: int):
        super().__init__()
        dataset = split.dataset
        self.query_tower = model.query_tower
        self.history_length = 0 if split.train.history is None else int(split.train.history.shape[1])
        self.user_lookup = _lookup(dataset.user_ids)
        self.item_lookup = _lookup(dataset.item_ids)
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
        """0 for ids the model never saw in training (they get the padding user's embedding)."""
        return self.user_lookup(user_id)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def by_user(self, user_id):
        return self._top_k({"user": tf.cast(self.user_lookup(user_id), tf.int32)})

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([None, None], tf.string)])
    def by_user_and_history(self, user_id, history):
        """`history`: the user's most recent item ids, most recent last; "" pads."""
        index = tf.cast(self.item_lookup(history), tf.int32)
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


def recommend(model_dir: str | Path, user_id: str, k: int, history: list[str] | None = None) -> list[tuple[str, str, float]]:
    """(item id, title, score) of the top `k` items for `user_id` from an exported model."""
    loaded = tf.saved_model.load(str(model_dir))
    if int(loaded.user_index(tf.constant([user_id]))[0]) == 0:
        raise ConfigError(f"--user: {user_id!r} is not among the users the model in {model_dir} was trained on")
    serve = loaded.signatures["serving_default"]
    args = {"user_id": tf.constant([user_id])}
    if "history" in serve.structured_input_signature[1]:
        args["history"] = tf.constant([history or [""]])
    out = serve(**args)
    rows = zip(out["item_ids"][0].numpy(), out["titles"][0].numpy(), out["scores"][0].numpy())
    return [(i.decode(), t.decode(), float(s)) for i, t, s in rows][:k]
