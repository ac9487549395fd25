"""L2 regularisation of the towers (`model.l2`): λ·Σw² over every embedding table and kernel.

Biases and the constant feature lookup tables are left alone; a table that both towers share
(`model.share_item_embedding`) counts once. The penalty covers whole tables, as Keras's
`embeddings_regularizer` would, so a step's gradient on them is dense: it is built only when
λ > 0. Decoupled weight decay (`training.weight_decay`) is the optimizer's, not this module's.
"""
from __future__ import annotations

import tuner  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf

# Attributes that hold a layer's multiplicative weights: Embedding tables, Dense and GRU kernels.
WEIGHT_ATTRIBUTES = ("embeddings", "kernel", "recurrent_kernel")


def regularized_weights(*layers: tf.Module) -> list[tf.Variable]:
    """The trainable embedding tables and kernels of `layers` and of every layer inside them, each once.

    Call it after the layers are built (their first call creates the variables).
    """
    found, seen = [], set()
    for layer in layers:
        for module in (layer, *layer.submodules):
            for name in WEIGHT_ATTRIBUTES:
                weight = getattr(module, name, None)
                if isinstance(weight, tf.Variable) and weight.trainable and weight.ref() not in seen:
                    seen.add(weight.ref())
                    found.append(weight)
    return found


def l2_penalty(weights: list[tf.Variable], l2: float) -> tf.Tensor:
    """l2·Σ_w Σ w², float32[]; 0 without weights or with l2 = 0."""
    if l2 == 0 or not weights:
        return tf.constant(0.0)
    return l2 * tf.add_n([tf.reduce_sum(tf.square(w)) for w in weights])
