"""Sampling probabilities of the softmax columns: the MNS mixture against simulated draws."""
from __future__ import annotations

import numpy as np

import tuner  # noqa: F401
import tensorflow as tf

from tuner.model.sampling import mns_mixture_probability, unigram_probabilities


def test_mns_mixture_matches_the_frequency_of_simulated_columns():
    """B draws from the unigram distribution plus B' uniform draws per batch: the share of all
    columns that carry item j converges to the mixture probability."""
    rng = np.random.default_rng(0)
    counts = np.array([0, 50, 20, 10, 5, 5, 3, 3, 2, 1, 1])  # index 0 is padding, never drawn
    items = np.arange(1, len(counts))
    p = counts[1:] / counts.sum()
    b, b_uniform, batches = 8, 24, 20_000
    in_batch = rng.choice(items, size=(batches, b), p=p)
    uniform = rng.integers(1, len(counts), size=(batches, b_uniform))
    columns = np.concatenate([in_batch, uniform], axis=1).ravel()
    observed = np.bincount(columns, minlength=len(counts))[1:] / len(columns)
    expected = mns_mixture_probability(p, b, b_uniform, len(items))
    np.testing.assert_allclose(observed, expected, rtol=0.03)
    assert abs(expected.sum() - 1.0) < 1e-12  # a distribution over the corpus
    # Neither component alone fits the simulation.
    assert np.abs(observed / p - 1).max() > 0.5 and np.abs(observed * len(items) - 1).max() > 0.5


def test_mns_mixture_on_tensors_matches_numpy():
    p = unigram_probabilities(np.array([0, 6, 4, 3, 2, 0]))[1:]
    q = mns_mixture_probability(tf.constant(p), tf.constant(4.0), tf.constant(3.0), 5)
    np.testing.assert_allclose(q.numpy(), (4 * p + 3 / 5) / 7, rtol=1e-6)
