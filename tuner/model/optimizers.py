"""Optimizers by config name, with Adam's embedding-table step made row-sparse.

tf-keras Adam decays its moments m and v over every row of a table at every step, even when
the gradient is an `IndexedSlices` over the batch's rows, so a step's cost grows with the
catalog (a bare 32-dim table, 1,024 ids a step: 2.1 ms at 10k rows, 168 ms at 1M). `LazyAdam`
updates m, v and the weights only at the rows the batch gathered, as TF-Addons' LazyAdam does;
kernels and biases get dense gradients and take tf-keras Adam's step unchanged. A row the batch
did not touch keeps its moments until it is next seen, so its momentum does not move it between
visits. Adagrad already updates only the gathered rows; SGD gets the same fix as Adam. RMSprop and
`dense_adam` (tf-keras Adam, kept for reproducing earlier runs) still touch every row.
`experiments/benchmarks/sparse_step.py` measures the step times side by side.
"""
from __future__ import annotations

import tuner  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf

from tuner.errors import ConfigError

# Whose step on an embedding table touches only the batch's rows (dense_adam and rmsprop touch every row).
SPARSE_OPTIMIZERS = ("adagrad", "adam", "sgd")


class RowSparseDecay:
    """Decoupled weight decay w ← w − lr·wd·w, applied before the gradient step as tf-keras applies
    it, but only where the gradient lands: every step for a dense variable, and for an embedding
    table only at the rows the batch gathered. A row's decay then follows its frequency, as an L2
    penalty on the batch's rows would, and a step never touches the whole table (tf-keras decays
    every row of every table each step). Mixed in before a tf-keras optimizer."""

    def _apply_weight_decay(self, variables):
        """Nothing here: `update_step` decays each variable where its gradient lands."""

    def update_step(self, gradient, variable):
        if self.weight_decay and self._use_weight_decay(variable):
            rate = tf.cast(self.learning_rate, variable.dtype) * tf.cast(self.weight_decay, variable.dtype)
            if isinstance(gradient, tf.IndexedSlices):
                rows = gradient.indices
                variable.scatter_sub(tf.IndexedSlices(tf.gather(variable, rows) * rate, rows))
            else:
                variable.assign_sub(variable * rate)
        return super().update_step(gradient, variable)


class LazyAdam(tf.keras.optimizers.Adam):
    """Adam whose step on an `IndexedSlices` gradient reads and writes m, v and the weights only at its rows.

    The bias correction follows the global step, as in TF-Addons' LazyAdam.
    """

    def __init__(self, learning_rate=0.001, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        if self.amsgrad:
            raise ValueError("LazyAdam: amsgrad has no row-sparse form")

    def update_step(self, gradient, variable):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable)
        # apply_gradients has summed duplicate indices, so each row appears once.
        rows, grad = gradient.indices, gradient.values
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        alpha = (tf.cast(self.learning_rate, dtype) * tf.sqrt(1 - tf.pow(beta_2, step))
                 / (1 - tf.pow(beta_1, step)))
        key = self._index_dict[self._var_key(variable)]
        m, v = self._momentums[key], self._velocities[key]
        m_rows = beta_1 * tf.gather(m, rows) + (1 - beta_1) * grad
        v_rows = beta_2 * tf.gather(v, rows) + (1 - beta_2) * tf.square(grad)
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        epsilon = self.epsilon * tf.sqrt(1 - tf.pow(beta_2, step)) if self.adaptive_epsilon else self.epsilon
        variable.scatter_sub(tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + epsilon), rows))


class LazySGD(tf.keras.optimizers.SGD):
    """SGD that, without momentum, keeps no slot and writes only an `IndexedSlices` gradient's rows
    (tf-keras SGD keeps a zero momentum slot per weight and adds it to the whole table every step)."""

    def build(self, var_list):
        if self.momentum != 0:
            return super().build(var_list)
        super(tf.keras.optimizers.SGD, self).build(var_list)  # the step counter and variable index only
        self.momentums, self._built = [], True

    def update_step(self, gradient, variable):
        if self.momentum != 0:
            return super().update_step(gradient, variable)
        lr = tf.cast(self.learning_rate, variable.dtype)
        if isinstance(gradient, tf.IndexedSlices):
            variable.scatter_sub(tf.IndexedSlices(gradient.values * lr, gradient.indices))
        else:
            variable.assign_sub(gradient * lr)


class SparseAdam(RowSparseDecay, LazyAdam):
    """`training.optimizer: adam`: LazyAdam with row-sparse decoupled weight decay."""


class SparseAdagrad(RowSparseDecay, tf.keras.optimizers.Adagrad):
    """`training.optimizer: adagrad`: tf-keras Adagrad (already row-sparse) with row-sparse weight decay."""


class SparseSGD(RowSparseDecay, LazySGD):
    """`training.optimizer: sgd`: LazySGD with row-sparse weight decay."""


def build_optimizer(name: str, learning_rate: float, weight_decay: float = 0.0,
                    sparse_tables: bool = False) -> tf.keras.optimizers.Optimizer:
    """The optimizer `training.optimizer: name` means; `weight_decay` > 0 is decoupled (Loshchilov &
    Hutter): `dense_adam` with it is AdamW as tf-keras has it, every row each step. `sparse_tables`:
    refuse, in one line, an optimizer whose step touches every row of an embedding table."""
    if sparse_tables and name not in SPARSE_OPTIMIZERS:
        raise ConfigError(f"training.optimizer: {name!r} updates every row of an embedding table at each step; "
                          f"row-sparse ones: {', '.join(SPARSE_OPTIMIZERS)}")
    kinds = {"adagrad": SparseAdagrad, "adam": SparseAdam, "sgd": SparseSGD,
             "dense_adam": tf.keras.optimizers.Adam, "rmsprop": tf.keras.optimizers.RMSprop}
    if name not in kinds:
        raise ConfigError(f"training.optimizer: {name!r} is not one of {', '.join(kinds)}")
    return kinds[name](learning_rate=learning_rate, weight_decay=weight_decay or None)
