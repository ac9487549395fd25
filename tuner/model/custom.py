"""User towers (`model.towers`): a function the config names builds the query and candidate towers.

The function takes one `TowersContext` and returns `(query_tower, candidate_tower)`, two tf-keras
layers (`tf.keras.layers.Layer`; TFRS runs on tf-keras, not Keras 3) that take what the built-in
towers take:

- query tower: `{"user": int32 [B], "history": int32 [B, N]}` → float [B, embedding_dim]; "history"
  is there exactly when `model.history_length` N > 0 (most recent last, 0 = padding, -1 = an item
  id the served model does not know; all padding when a served query gives no history).
- candidate tower: item int32 [B] → float [B, embedding_dim].

Users are 1..num_users and items 1..num_items; 0 is an unknown user (a served id the data never
had) or a padding slot. Everything after the towers is the built-in model: `model.normalize`,
the temperature, logQ, MNS, CBNS, hard negatives, accidental hits, `model.l2`, evaluation and
export. Cold start is the towers' own: `context.user_embedding()` / `item_embedding()` give the
id tables whose trained out-of-vocabulary row serves ids without training interactions.

`user_towers` builds them and checks them once on a tiny batch before anything trains: output
shape, inference that does not depend on chance, and `training` reaching every layer that needs
it. Every failure is a one-line ConfigError naming `model.towers`, the function and what was
expected; in a search it fails that trial, with the reason, and the study goes on.
"""
from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field

import tuner  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import tensorflow as tf

from tuner import usercode
from tuner.config import Config
from tuner.data.types import Feature
from tuner.errors import ConfigError
from tuner.model.towers import FeatureEmbedding, OovEmbedding

KEY = usercode.TOWERS_KEY


@dataclass(frozen=True)
class TowersContext:
    """Everything a towers function is handed.

    num_users, num_items: vocabulary sizes; an id table needs num_users + 1 (num_items + 1) rows,
        row 0 being the out-of-vocabulary row.
    user_features, item_features: the dataset's side features, name → `Feature` (`values[i]`: the
        category of user or item i, [N + 1] or a padded bag [N + 1, L], 0 = unknown; `vocab_size`),
        when `model.user_features` / `model.item_features` is true, else {}.
    embedding_dim: the width both towers must output (`model.embedding_dim`).
    history_length: N of the query tower's "history" input; 0 = no history.
    share_item_embedding: the config asks the history and the candidate tower to share one
        item-id table: use the same `item_embedding()` layer in both towers.
    params: `model.params`, a copy (the towers function may keep it).
    id_dropout, known_users, known_items: the cold-start rule `user_embedding()` and
        `item_embedding()` apply (`model.id_dropout`; bool [rows], true for ids with training
        interactions).
    """

    num_users: int
    num_items: int
    user_features: dict[str, Feature]
    item_features: dict[str, Feature]
    embedding_dim: int
    history_length: int
    share_item_embedding: bool
    params: dict
    id_dropout: float = 0.0
    known_users: np.ndarray | None = field(default=None, repr=False)
    known_items: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def of(cls, cfg: Config, num_users: int, num_items: int, user_features: dict[str, Feature],
           item_features: dict[str, Feature], known_users: np.ndarray | None = None,
           known_items: np.ndarray | None = None) -> TowersContext:
        """The context of `cfg` over a dataset's sizes and the side features its model uses."""
        m = cfg.model
        return cls(num_users=num_users, num_items=num_items, user_features=dict(user_features),
                   item_features=dict(item_features), embedding_dim=m.embedding_dim,
                   history_length=m.history_length, share_item_embedding=m.share_item_embedding,
                   params=copy.deepcopy(m.params), id_dropout=m.id_dropout, known_users=known_users,
                   known_items=known_items)

    def user_embedding(self, dim: int | None = None, name: str = "user_embedding") -> OovEmbedding:
        """A user-id table (`dim` defaults to embedding_dim) with the built-in cold-start rule."""
        return OovEmbedding(self.num_users + 1, dim or self.embedding_dim, self.known_users, self.id_dropout, name=name)

    def item_embedding(self, dim: int | None = None, name: str = "item_embedding") -> OovEmbedding:
        """An item-id table with the cold-start rule; it also reads history padding 0 and -1 safely."""
        return OovEmbedding(self.num_items + 1, dim or self.embedding_dim, self.known_items, self.id_dropout, name=name)

    def user_feature_embeddings(self, dim: int | None = None) -> list[FeatureEmbedding]:
        """One layer per user feature: user index [B] → [B, dim], the mean over a feature's bag."""
        return [FeatureEmbedding(n, f, dim or self.embedding_dim) for n, f in sorted(self.user_features.items())]

    def item_feature_embeddings(self, dim: int | None = None) -> list[FeatureEmbedding]:
        """One layer per item feature: item index [B] → [B, dim]."""
        return [FeatureEmbedding(n, f, dim or self.embedding_dim) for n, f in sorted(self.item_features.items())]


class UserTower(tf.keras.layers.Layer):
    """A user's tower followed by the built-in tail: float32 output, optionally L2-normalised.

    `features`: names of the side features the tower was handed (export reports whether a cold
    user was served with them). A query without "history" (served by user id alone) gets an
    all-padding one of `history_length`, as the built-in tower treats it."""

    def __init__(self, tower: tf.keras.layers.Layer, normalize: bool, features: tuple[str, ...], name: str,
                 history_length: int = 0):
        super().__init__(name=name)
        self.tower, self.normalize, self.features = tower, normalize, features
        self.history_length = history_length

    def call(self, inputs, training=False):
        if self.history_length and isinstance(inputs, dict) and "history" not in inputs:
            rows = tf.shape(inputs["user"])[0]
            inputs = {**inputs, "history": tf.zeros([rows, self.history_length], tf.int32)}
        x = tf.cast(self.tower(inputs, training=training), tf.float32)
        return tf.math.l2_normalize(x, axis=-1) if self.normalize else x


def user_towers(cfg: Config, context: TowersContext) -> tuple[UserTower, UserTower]:
    """The checked (query, candidate) towers of `cfg.model.towers` for `context`, wrapped in the
    built-in tail; their variables exist afterwards (they were called on the check batch)."""
    spec = cfg.model.towers
    fn = usercode.load_function(spec)
    try:
        made = fn(context)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's code: its error becomes the one-line reason
        raise ConfigError(f"{KEY}: {spec}: the function raised {_describe(exc, spec)}") from exc
    if not (isinstance(made, (tuple, list)) and len(made) == 2):
        raise ConfigError(f"{KEY}: {spec}: returned {_kind(made)}, expected (query_tower, candidate_tower), "
                          "a tuple of two tf.keras.layers.Layer")
    for role, tower in zip(("query", "candidate"), made):
        if not isinstance(tower, tf.keras.layers.Layer):
            keras3 = type(tower).__module__.split(".")[0] == "keras"
            raise ConfigError(f"{KEY}: {spec}: the {role} tower is {_kind(tower)}, expected a tf.keras.layers.Layer"
                              + (" (tf-keras: TFRS cannot train Keras 3 layers; build them with tf.keras after "
                                 "`import tuner`)" if keras3 else ""))
    query, candidate = made
    check_towers(query, candidate, context, spec)
    return (UserTower(query, cfg.model.normalize, tuple(sorted(context.user_features)), "query_tower",
                      context.history_length),
            UserTower(candidate, cfg.model.normalize, tuple(sorted(context.item_features)), "candidate_tower"))


def check_batch(context: TowersContext) -> tuple[dict, tf.Tensor]:
    """Three queries (an unknown user, the first, the last; histories empty, ending in an item, and
    ending in an unknown item -1) and three items (the first, a middle one, the last)."""
    users = tf.constant([0, 1, context.num_users], tf.int32)
    query = {"user": users}
    if context.history_length > 0:
        history = np.zeros([3, context.history_length], np.int32)
        history[1, -1], history[2, -1] = 1, -1
        if context.history_length > 1:
            history[2, -2] = context.num_items
        query["history"] = tf.constant(history)
    items = tf.constant([1, max(1, context.num_items // 2), context.num_items], tf.int32)
    return query, items


def check_towers(query: tf.keras.layers.Layer, candidate: tf.keras.layers.Layer, context: TowersContext,
                 spec: str) -> None:
    """Calls each tower on the check batch as evaluation does (training=False, twice: the outputs
    must agree) and as training does (training=True, in a tf.function like `fit`; the weights
    are restored afterwards, so batch statistics do not move). Refuses a layer whose `call` takes
    no `training` although layers inside it behave differently in training (dropout, batch norm)."""
    query_inputs, items = check_batch(context)
    batch, width = 3, context.embedding_dim
    for role, tower, inputs in (("query", query, query_inputs), ("candidate", candidate, items)):
        where = f"{KEY}: {spec}: the {role} tower"
        first = _call(tower, inputs, False, where, spec)
        if first.shape.rank != 2 or first.shape[0] != batch or first.shape[1] != width:
            raise ConfigError(f"{where} returned shape {first.shape.as_list()} for a batch of {batch}, expected "
                              f"[{batch}, {width}] ([batch, model.embedding_dim])")
        if not first.dtype.is_floating:
            raise ConfigError(f"{where} returned {first.dtype.name}, expected float embeddings")
        if not np.array_equal(first.numpy(), _call(tower, inputs, False, where, spec).numpy()):
            raise ConfigError(f"{where} gave two different outputs for the same batch with training=False, expected "
                              "the same: a layer inside runs as in training (pass `training` on to dropout and noise)")
        weights = tower.get_weights()
        trained = _call(tf.function(lambda x, t=tower: t(x, training=True)), inputs, None, where + " (training=True, "
                        "in a tf.function as in training)", spec)
        tower.set_weights(weights)
        if trained.shape.as_list() != [batch, width]:
            raise ConfigError(f"{where} returned shape {trained.shape.as_list()} with training=True, "
                              f"expected [{batch}, {width}]")
        uses = sorted({type(layer).__name__ for layer in tower.submodules if isinstance(layer, tf.keras.layers.Layer)
                       and "training" in inspect.signature(layer.call).parameters})
        if uses and not _takes_training(tower):
            raise ConfigError(f"{where}: {type(tower).__name__}.call has no `training` argument, expected one: "
                              f"it holds {', '.join(uses)}, which behave differently in training "
                              "(def call(self, inputs, training=False), passed on to them)")


def _call(tower, inputs, training, where: str, spec: str) -> tf.Tensor:
    try:
        out = tower(inputs) if training is None else tower(inputs, training=training)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's layer: its error becomes the one-line reason
        raise ConfigError(f"{where} failed on the check batch ({_inputs(inputs)}): {_describe(exc, spec)}") from exc
    if not isinstance(out, tf.Tensor):
        raise ConfigError(f"{where} returned {_kind(out)}, expected one tensor [batch, model.embedding_dim]")
    return out


def _takes_training(layer: tf.keras.layers.Layer) -> bool:
    """`call` takes `training`, by name or among its **kwargs."""
    parameters = inspect.signature(layer.call).parameters.values()
    return any(p.name == "training" or p.kind is p.VAR_KEYWORD for p in parameters)


def _inputs(inputs) -> str:
    if isinstance(inputs, dict):
        return ", ".join(f"{k} {v.dtype.name} {v.shape.as_list()}" for k, v in inputs.items())
    return f"item {inputs.dtype.name} {inputs.shape.as_list()}"


def _kind(value) -> str:
    module = type(value).__module__
    if value is None or module == "builtins" or module.startswith(usercode.FILE_MODULE_PREFIX):
        return repr(None) if value is None else type(value).__qualname__
    return f"{module}.{type(value).__qualname__}"


def _describe(exc: BaseException, spec: str) -> str:
    ref = usercode.parse(spec)
    return usercode.describe(exc, ref.module if ref.is_file else None)


def check_config(cfg: Config) -> dict:
    """Builds `cfg`'s towers once on its dataset's check batch (no training) and returns the code's
    fingerprint for a study to record; a failure is the one-line ConfigError of `user_towers`.
    `tuner search` runs it in a child process before the first trial (`tuner.towers_check`)."""
    from tuner.data import load_dataset

    data, m = load_dataset(cfg.dataset, seed=cfg.seed), cfg.model
    tf.keras.utils.set_random_seed(cfg.seed)
    user_towers(cfg, TowersContext.of(cfg, data.num_users, data.num_items,
                                      data.user_features if m.user_features else {},
                                      data.item_features if m.item_features else {}))
    return usercode.fingerprint(cfg.model.towers)
