"""The CBNS memory bank against a plain Python FIFO of the most recent M rows."""
from __future__ import annotations

import numpy as np
import pytest

import tuner  # noqa: F401
import tensorflow as tf

from tuner.model.bank import CrossBatchBank


def rows(start: int, n: int, dim: int = 3):
    """n distinguishable rows: ids start..start+n-1, embeddings and log q derived from the id."""
    ids = np.arange(start, start + n, dtype=np.int32)
    embeddings = (ids[:, None] + np.arange(dim) / 10).astype(np.float32)
    return embeddings, ids, (-ids / 100).astype(np.float32)


def test_bank_holds_the_most_recent_rows_oldest_first():
    bank = CrossBatchBank(size=7, dim=3)
    fifo, start = [], 1
    for n in (3, 3, 2, 5, 7, 1, 4, 9):  # sizes that do and do not divide M, exactly M, more than M
        embeddings, ids, log_q = rows(start, n)
        bank.enqueue(tf.constant(embeddings), tf.constant(ids), tf.constant(log_q))
        fifo = (fifo + list(range(start, start + n)))[-7:]
        start += n
        oldest_embeddings, oldest_ids, oldest_log_q = (t.numpy() for t in bank.oldest_first())
        assert oldest_ids.tolist() == fifo
        assert int(bank.count) == len(fifo)
        expected_embeddings, _, expected_log_q = rows(0, start)
        np.testing.assert_allclose(oldest_embeddings, expected_embeddings[fifo])
        np.testing.assert_allclose(oldest_log_q, expected_log_q[fifo], rtol=1e-6)
        # `read` serves the same rows (in slot order), each with its own embedding and log q.
        read_embeddings, read_ids, read_log_q = (t.numpy() for t in bank.read())
        assert sorted(read_ids.tolist()) == sorted(fifo)
        np.testing.assert_allclose(read_embeddings, expected_embeddings[read_ids])
        np.testing.assert_allclose(read_log_q, expected_log_q[read_ids], rtol=1e-6)


def test_enqueue_writes_only_the_batch_rows_in_a_graph():
    """The ring writes B slots per step; compiled, as training runs it."""
    bank = CrossBatchBank(size=5, dim=2)
    enqueue = tf.function(bank.enqueue)
    for start in range(1, 13, 2):
        embeddings, ids, log_q = rows(start, 2, dim=2)
        before = bank.embeddings.numpy().copy()
        enqueue(tf.constant(embeddings), tf.constant(ids), tf.constant(log_q))
        written = [(start - 1) % 5, start % 5]  # the two slots after the previous write
        changed = np.flatnonzero((bank.embeddings.numpy() != before).any(axis=1)).tolist()
        assert sorted(changed) == sorted(written)
        np.testing.assert_array_equal(bank.embeddings.numpy()[written], embeddings)
    assert bank.oldest_first()[1].numpy().tolist() == [8, 9, 10, 11, 12]
    assert int(bank.position) == 12 % 5


def test_a_bank_in_warm_up_reads_nothing_and_no_gradient_reaches_it():
    bank = CrossBatchBank(size=4, dim=2)
    embeddings = tf.Variable(tf.ones([2, 2]))
    bank.enqueue(embeddings, tf.constant([5, 6]), tf.constant([-1.0, -2.0]))
    assert [t.shape[0] for t in bank.read(use=tf.constant(False))] == [0, 0, 0]
    assert bank.read()[1].numpy().tolist() == [5, 6]
    assert not any(v.trainable for v in bank.weights)
    with tf.GradientTape() as tape:
        stored, _, _ = bank.read()
        total = tf.reduce_sum(stored * embeddings)
    assert tape.gradient(total, bank.embeddings) is None


def test_rejects_an_empty_bank():
    with pytest.raises(ValueError, match="size"):
        CrossBatchBank(size=0, dim=4)
