"""Row-sparse optimizers (`tuner/model/optimizers.py`): LazyAdam is tf-keras Adam wherever a row
gets a gradient, leaves every other row (and its moments) alone, and unknown or dense names are
one-line errors."""
from __future__ import annotations

import numpy as np
import pytest

import tuner  # noqa: F401
import tensorflow as tf

from tuner.config import from_dict
from tuner.errors import ConfigError
from tuner.memory import SLOTS
from tuner.model.optimizers import SPARSE_OPTIMIZERS, LazyAdam, build_optimizer

ROWS, DIM = 12, 3


def table_after_steps(optimizer, steps: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """A [ROWS, DIM] table and a dense [DIM] bias after one gather-based step per id list: (table, bias)."""
    table = tf.Variable(np.random.default_rng(0).normal(size=(ROWS, DIM)).astype(np.float32))
    bias = tf.Variable(np.ones(DIM, np.float32))
    for ids in steps:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(tf.gather(table, ids) + bias - 0.5))
        grads = tape.gradient(loss, [table, bias])
        assert isinstance(grads[0], tf.IndexedSlices)
        optimizer.apply_gradients(zip(grads, [table, bias]))
    return table.numpy(), bias.numpy()


def test_lazy_adam_is_adam_when_every_row_is_in_every_step():
    steps = [list(range(ROWS)) + [3, 3, 7]] * 4  # duplicates too: their gradients are summed first
    ours = table_after_steps(LazyAdam(learning_rate=0.05), steps)
    theirs = table_after_steps(tf.keras.optimizers.Adam(learning_rate=0.05), steps)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)  # same step, another order of float ops


def test_lazy_adam_leaves_rows_outside_the_batch_where_adam_moves_them_by_momentum():
    steps = [[0, 1, 2], [3, 4], [3, 4]]
    start, _ = table_after_steps(LazyAdam(learning_rate=0.05), [])
    lazy, _ = table_after_steps(LazyAdam(learning_rate=0.05), steps)
    dense, _ = table_after_steps(tf.keras.optimizers.Adam(learning_rate=0.05), steps)
    np.testing.assert_array_equal(lazy[5:], start[5:])  # never gathered
    assert not np.allclose(lazy[:5], start[:5])
    assert not np.allclose(dense[:3], lazy[:3])  # Adam kept moving rows 0-2 after their step


def test_row_sparse_weight_decay_shrinks_only_the_gathered_rows_and_every_dense_weight():
    lr, decay, steps = 0.05, 0.5, [[1, 2]]
    for name in SPARSE_OPTIMIZERS:
        plain = table_after_steps(build_optimizer(name, lr), steps)
        decayed = table_after_steps(build_optimizer(name, lr, decay), steps)
        start = table_after_steps(build_optimizer(name, lr), [])
        shrink = [d - p for d, p in zip(decayed, plain)]
        np.testing.assert_allclose(shrink[0][[1, 2]], -lr * decay * start[0][[1, 2]], rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(shrink[0][[0, *range(3, ROWS)]], 0.0)
        np.testing.assert_allclose(shrink[1], -lr * decay * start[1], rtol=1e-4)


def test_dense_adam_is_tf_keras_adam_and_adamw_with_weight_decay():
    assert type(build_optimizer("dense_adam", 0.01)) is tf.keras.optimizers.Adam
    decayed = build_optimizer("dense_adam", 0.01, 0.1)
    assert isinstance(decayed, tf.keras.optimizers.Adam) and decayed.weight_decay == pytest.approx(0.1)


def test_an_optimizer_that_updates_every_row_is_refused_where_sparse_updates_are_asked_for():
    with pytest.raises(ConfigError) as error:
        build_optimizer("rmsprop", 0.01, sparse_tables=True)
    assert str(error.value) == ("training.optimizer: 'rmsprop' updates every row of an embedding table at each "
                                "step; row-sparse ones: adagrad, adam, sgd")
    assert isinstance(build_optimizer("adam", 0.01, sparse_tables=True), LazyAdam)


def test_an_unknown_optimizer_name_is_a_one_line_error_naming_the_allowed_ones():
    with pytest.raises(ConfigError) as error:
        from_dict({"training": {"optimizer": "lazy_adam"}})
    message = str(error.value)
    assert "training.optimizer" in message and "dense_adam" in message and "\n" not in message


@pytest.mark.parametrize("name, slots", [("adam", 2), ("adagrad", 1), ("sgd", 0), ("dense_adam", 2)])
def test_optimizer_state_per_table_is_what_the_memory_estimate_counts(name, slots):
    optimizer = build_optimizer(name, 0.05)
    table_after_steps(optimizer, [[1, 2]])
    assert sum(tuple(v.shape) == (ROWS, DIM) for v in optimizer.variables) == slots
    assert slots == SLOTS.get(name, 2)
