"""`model.l2` (a penalty on embedding tables and kernels) and `training.weight_decay` (decoupled,
AdamW-style): one real training step each, against the update they must add."""
from __future__ import annotations

import numpy as np
import pytest

import tuner  # noqa: F401
import tensorflow as tf

from tuner.config import OPTIMIZERS, from_dict
from tuner.data.types import Dataset, Feature, Interactions, Split
from tuner.errors import ConfigError
from tuner.model.optimizers import SPARSE_OPTIMIZERS
from tuner.model.regularization import regularized_weights
from tuner.train import build_model_for, make_optimizer

NUM_USERS, NUM_ITEMS, HISTORY = 6, 10, 3


def toy_split() -> Split:
    rng = np.random.default_rng(0)
    n = 40
    user = rng.integers(1, NUM_USERS + 1, n).astype(np.int32)
    item = rng.integers(1, NUM_ITEMS + 1, n).astype(np.int32)
    history = rng.integers(0, NUM_ITEMS + 1, (n, HISTORY)).astype(np.int32)
    inter = Interactions(user, item, np.arange(n, dtype=np.int64), np.ones(n, np.float32), history)
    dataset = Dataset("toy", np.array([""] + [f"u{i}" for i in range(NUM_USERS)]),
                      np.array([""] + [f"i{i}" for i in range(NUM_ITEMS)]), inter,
                      user_features={"age": Feature(rng.integers(0, 3, NUM_USERS + 1), 3)},
                      item_features={"genres": Feature(rng.integers(0, 5, (NUM_ITEMS + 1, 2)), 5)})
    empty = inter.take(np.arange(0))
    return Split(dataset, inter, empty, empty)


SPLIT = toy_split()
BATCH = {"user": tf.constant([1, 2, 3, 4], tf.int32), "item": tf.constant([2, 5, 7, 9], tf.int32),
         "history": tf.constant([[0, 1, 2], [3, 4, 5], [0, 0, 6], [7, 8, 9]], tf.int32)}


def trained_once(pooling="gru", **sections):
    """A model built and compiled as `tuner train` does, before and after one train_step."""
    cfg = {"model": {"embedding_dim": 4, "user_features": True, "item_features": True, "history_length": HISTORY,
                     "history_pooling": pooling, "query_layers": [5], "candidate_layers": [6]},
           "training": {"batch_size": 4, "optimizer": "sgd", "learning_rate": 0.1}, "seed": 5}
    for key, value in sections.items():
        cfg.setdefault(key, {}).update(value)
    model = build_model_for(from_dict(cfg), SPLIT)
    model.compute_loss(BATCH)  # builds the towers
    before = [v.numpy() for v in model.trainable_variables]  # names differ between models, order does not
    model.train_step(BATCH)
    return model, before


def updates(model, before):
    return [v.numpy() - w0 for v, w0 in zip(model.trainable_variables, before)]


def test_regularized_weights_are_the_tables_and_kernels_without_biases():
    model, _ = trained_once()
    names = sorted(v.name for v in regularized_weights(model.query_tower, model.candidate_tower))
    expected = sorted(v.name for v in model.trainable_variables if "bias" not in v.name)
    assert names == expected
    kinds = {name.rsplit("/", 1)[-1].split(":")[0] for name in names}
    assert kinds == {"embeddings", "kernel", "recurrent_kernel"}
    assert len(names) == 2 + 2 + 1 + 2 + 2 + 2  # ids, features, history table, GRU, query and candidate MLPs


def test_l2_adds_two_lambda_w_times_the_batch_to_every_table_and_kernel_gradient():
    l2, lr, batch = 0.05, 0.1, 4
    plain, before = trained_once()
    penalised, before_penalised = trained_once(model={"l2": l2})
    for w0, same in zip(before, before_penalised):
        np.testing.assert_array_equal(same, w0)
    regularized = {v.ref() for v in regularized_weights(penalised.query_tower, penalised.candidate_tower)}
    is_regularized = [v.ref() in regularized for v in penalised.trainable_variables]
    plain_updates, penalised_updates = updates(plain, before), updates(penalised, before)
    for w0, ours, theirs, penalty in zip(before, penalised_updates, plain_updates, is_regularized):
        extra = -lr * batch * 2 * l2 * w0 if penalty else 0.0
        np.testing.assert_allclose(ours - theirs, extra, rtol=1e-3, atol=1e-6)
    assert sum(is_regularized) == 11 and not all(is_regularized)  # the biases are left alone


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_weight_decay_shrinks_every_weight_the_step_updates_apart_from_the_gradient(optimizer):
    """Dense variables shrink by lr·wd·w every step; embedding tables with a row-sparse optimizer only
    at the rows the batch read (the candidate item table: the batch's items), with the others every row."""
    decay, lr = 0.5, 0.02
    training = {"optimizer": optimizer, "learning_rate": lr}
    plain, before = trained_once(pooling="attention", training=training)
    decayed, _ = trained_once(pooling="attention", training={**training, "weight_decay": decay})
    assert type(decayed.optimizer) is type(plain.optimizer)
    plain_updates, decayed_updates = updates(plain, before), updates(decayed, before)
    for v, w0, ours, theirs in zip(decayed.trainable_variables, before, decayed_updates, plain_updates):
        shrunk = np.ones(len(w0), bool)
        if optimizer in SPARSE_OPTIMIZERS and "embeddings" in v.name:
            shrunk = np.any(ours != theirs, axis=1)
            assert shrunk.any(), v.name
            if "candidate" in v.name and "item_embedding" in v.name:  # 11 rows, 4 read
                assert set(np.flatnonzero(shrunk)) <= {0, *BATCH["item"].numpy()}
        np.testing.assert_allclose(ours[shrunk] - theirs[shrunk], -lr * decay * w0[shrunk], rtol=1e-3, atol=1e-6)


def test_no_weight_decay_keeps_the_plain_optimizers():
    cfg = from_dict({"training": {"optimizer": "dense_adam"}})
    assert type(make_optimizer(cfg)) is tf.keras.optimizers.Adam
    assert make_optimizer(from_dict({"training": {"optimizer": "adam"}})).weight_decay is None


@pytest.mark.parametrize("section, message", [
    ({"model": {"l2": -0.1}}, "config: model.l2: must be >= 0 (0 = off)"),
    ({"training": {"weight_decay": -1.0}}, "config: training.weight_decay: must be >= 0 (0 = off)"),
    ({"training": {"weight_decay": 200.0, "learning_rate": 0.01}},
     "config: training.weight_decay: learning_rate × weight_decay = 2 must be < 1"),
    ({"negatives": {"cbns_gradient": "fresh"}},
     "config: negatives.cbns_gradient: 'fresh' is not one of balanced, paper"),
])
def test_bad_regularisation_settings_are_one_line_errors(section, message):
    with pytest.raises(ConfigError) as error:
        from_dict(section)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
