"""The streaming frequency estimator (Yi et al. 2019, Algorithm 2) against its definition and a
stream of known item frequencies."""
from __future__ import annotations

import numpy as np
import pytest

import tuner  # noqa: F401
import tensorflow as tf

from tuner.model.frequency import StreamingFrequencyEstimator


def algorithm_2(stream, num_buckets, alpha):
    """Item by item, in batch order: B[h] <- (1-α)·B[h] + α·(t - A[h]); A[h] <- t.

    A bucket's first sighting at step t sets B = t (once in t steps) rather than blending with an
    uninitialised B.
    """
    a, b = np.zeros(num_buckets, np.int64), np.zeros(num_buckets)
    for t, items in stream:
        for y in items:
            h = y % num_buckets
            b[h] = t if a[h] == 0 else (1 - alpha) * b[h] + alpha * (t - a[h])
            a[h] = t
    return a, b


def test_update_matches_algorithm_2_with_duplicates_collisions_and_gaps():
    rng = np.random.default_rng(3)
    steps = [1, 2, 3, 5, 6, 9, 10, 10, 14]  # gaps, and a repeated step
    stream = [(t, rng.integers(1, 13, 7)) for t in steps]  # 12 items into 5 buckets: collisions
    estimator = StreamingFrequencyEstimator(num_buckets=5, alpha=0.2, batch_size=7)
    shuffled = StreamingFrequencyEstimator(num_buckets=5, alpha=0.2, batch_size=7)
    for t, items in stream:
        estimator.update(tf.constant(items, tf.int32), t)
        shuffled.update(tf.constant(rng.permutation(items), tf.int32), t)
    a, b = algorithm_2(stream, 5, 0.2)
    np.testing.assert_array_equal(estimator.last_seen.numpy(), a)
    np.testing.assert_allclose(estimator.gap.numpy(), b, rtol=1e-5)
    # Duplicates are handled in closed form, so the order within a batch does not matter.
    np.testing.assert_allclose(shuffled.gap.numpy(), estimator.gap.numpy(), rtol=1e-6)
    items = np.arange(1, 13)
    np.testing.assert_allclose(estimator.probability(tf.constant(items)).numpy(),
                               1.0 / (b[items % 5] * 7), rtol=1e-5)


def test_unseen_items_get_less_than_one_occurrence_in_all_steps():
    estimator = StreamingFrequencyEstimator(num_buckets=100, alpha=0.1, batch_size=4)
    for t in range(1, 11):
        estimator.update(tf.constant([1, 2, 2, 3]), t)
    p = estimator.probability(tf.constant([[1, 50]])).numpy()
    assert p.shape == (1, 2)
    assert p[0, 1] == pytest.approx(1.0 / (10 * 4))
    assert p[0, 0] > p[0, 1]


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="alpha"):
        StreamingFrequencyEstimator(num_buckets=10, alpha=0.0, batch_size=4)


def test_converges_to_per_draw_probabilities_and_tracks_a_change():
    rng = np.random.default_rng(0)
    p = np.array([0.3, 0.2, 0.15, 0.1, 0.08, 0.06, 0.05, 0.03, 0.02, 0.01])
    items = np.arange(1, 11)
    batch_size, steps = 32, 3000
    estimator = StreamingFrequencyEstimator(num_buckets=64, alpha=0.01, batch_size=batch_size)

    @tf.function  # the whole stream in one graph: the update must be graph-friendly anyway
    def feed(draws, first_step):
        for i in tf.range(tf.shape(draws)[0]):
            estimator.update(draws[i], first_step + tf.cast(i, tf.int64))

    def run(probabilities, first_step):
        draws = rng.choice(items, size=(steps, batch_size), p=probabilities).astype(np.int32)
        feed(tf.constant(draws), tf.constant(first_step, tf.int64))
        return estimator.probability(tf.constant(items)).numpy()

    estimate = run(p, 1)
    np.testing.assert_allclose(estimate, p, rtol=0.25)
    assert np.abs(estimate / p - 1).mean() < 0.1

    shifted = p[::-1].copy()  # popular items become rare and the other way round
    estimate = run(shifted, 1 + steps)
    np.testing.assert_allclose(estimate, shifted, rtol=0.25)
    assert np.abs(estimate / shifted - 1).mean() < 0.1
